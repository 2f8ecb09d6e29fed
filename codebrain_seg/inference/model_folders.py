"""Which trained model a request means: the results folder of a CodeBrain variant, the configuration to use when
none is given, and the plans a model was trained with."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from codebrain_seg import paths
from codebrain_seg.device import uses_gpu
from codebrain_seg.errors import InputError, MissingFileError
from codebrain_seg.io import read_json
from codebrain_seg.plans import PLANS_NAME, Configuration, check_plans
from codebrain_seg.results_layout import (
    CODEBRAIN_FOLDER,
    finished_configurations,
    model_fold_dir,
)
from codebrain_seg.variants import CodeBrainVariant
from planners.experiment_planner import get_configuration
from planners.plan_and_preprocess import load_plans


def model_folder_prefix(codebrain: CodeBrainVariant | None = None, dataset: str | int | None = None,
                        configuration: str | None = None) -> str:
    """``CodeBrain`` plus the variant tags ``codebrain_train`` gives the same options
    (:meth:`codebrain_seg.variants.CodeBrainVariant.tag`).

    A ``loss_weights`` pair is a tag only when it differs from the plans' (read from the dataset's preprocessed
    plans, configuration ``configuration``), exactly as in training.
    """
    chosen = codebrain or CodeBrainVariant()
    planned = None
    if chosen.loss_weights is not None:
        if dataset is None or configuration is None:
            chosen.tag()  # raises: the weights name a folder only relative to the plans
        planned = Configuration(get_configuration(load_plans(paths.preprocessed_dataset_dir(dataset)),
                                                  configuration), configuration).loss.reconstruction
    return CODEBRAIN_FOLDER + chosen.tag(planned)


def variant_fold_dir(dataset: str | int, fold: int | str, configuration: str,
                     codebrain: CodeBrainVariant | None = None) -> Path:
    """``fold_F`` folder of a CodeBrain variant, named as ``codebrain_train`` names it (:func:`model_folder_prefix`)."""
    prefix = model_folder_prefix(codebrain, dataset, configuration)
    return model_fold_dir(dataset, fold, configuration, prefix)


def default_configuration(dataset: str | int, fold: int | str, device: str = "cpu", trainer: str = CODEBRAIN_FOLDER,
                          choices: tuple[str, str] = ("2d", "2d_cpu")) -> str:
    """Configuration to use when none is given.

    The one configuration with a finished Stage II for this dataset, fold and model folder prefix (``trainer``,
    e.g. ``CodeBrain-v1``), if exactly one exists; otherwise ``codebrain_train``'s default: ``choices[0]`` when a
    CUDA device will be used, ``choices[1]`` otherwise.
    """
    found = finished_configurations(dataset, fold, trainer)
    if len(found) == 1:
        return found[0]
    return choices[0] if str(device).startswith("cuda") and uses_gpu(device) else choices[1]


def model_plans(fold_dir: Path) -> dict[str, Any]:
    """The plans a model folder was trained with (``plans.json`` beside its folds; older runs:
    ``codebrainPlans.json``)."""
    for candidate in (fold_dir.parent / "plans.json", fold_dir.parent / f"{PLANS_NAME}.json"):
        if candidate.is_file():
            plans = read_json(candidate)
            check_plans(plans, str(candidate))
            return plans
    raise MissingFileError(f"{fold_dir.parent} has no plans.json: not a model folder written by codebrain_train")


def load_predictor_plans(dataset: str | int, fold: int | str, configuration: str, method: str = "codebrain",
                         trainer: str = CODEBRAIN_FOLDER) -> dict[str, Any]:
    """The plans a model (folder prefix ``trainer``) was trained with (copied into its folder by the trainer), else
    the dataset's plans."""
    if method == "codebrain":
        fold_dir = model_fold_dir(dataset, fold, configuration, trainer)
        if (fold_dir.parent / "plans.json").is_file() or (fold_dir.parent / f"{PLANS_NAME}.json").is_file():
            return model_plans(fold_dir)
    return load_plans(paths.preprocessed_dataset_dir(dataset))


def resolve_model_folder(folder: str | Path, fold: int | str | None = None) -> tuple[Path, str, str, str]:
    """A model given by its folder alone (``codebrain_impute -m``): ``<Method>[<tags>]__<plans>__<configuration>``
    (then ``fold`` picks ``fold_F``, default 0) or one of its ``fold_F`` folders.

    Returns:
        ``(fold folder, dataset folder name or '', configuration, folder prefix)``; the dataset name is the parent
        folder's when it is a ``DatasetXXX_Name``.
    """
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise MissingFileError(f"model folder {path} does not exist (a <Method>__<plans>__<configuration> folder, "
                               f"or its fold_F, as codebrain_train or codebrain_install_model writes it)")
    if path.name.startswith("fold_"):
        if fold is not None and path.name != f"fold_{fold}":
            raise InputError(f"-m {path} is fold {path.name[5:]} but -f {fold} was given: give one of them")
        fold_dir = path
    else:
        fold_dir = path / f"fold_{0 if fold is None else fold}"
    model_dir = fold_dir.parent
    parts = model_dir.name.split("__")
    if len(parts) != 3:
        raise InputError(f"{model_dir} is not a model folder: its name must be <Method>__<plans>__<configuration> "
                         f"(e.g. CodeBrain__codebrainPlans__2d_cpu)")
    if not fold_dir.is_dir():
        folds = ", ".join(sorted(p.name for p in model_dir.glob("fold_*") if p.is_dir())) or "none"
        raise MissingFileError(f"{fold_dir} does not exist (folds of {model_dir.name}: {folds}); give the fold "
                               f"with -f")
    dataset = model_dir.parent.name if paths.parse_dataset_folder_name(model_dir.parent.name) else ""
    return fold_dir, dataset, parts[2], parts[0]
