"""Which trained model a request means: the results folder of a CodeBrain variant, the configuration to use when
none is given, and the plans a model was trained with."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from codebrain_seg import paths
from codebrain_seg.device import uses_gpu
from codebrain_seg.errors import MissingFileError
from codebrain_seg.io import read_json
from codebrain_seg.plans import PLANS_NAME, Configuration
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
            return read_json(candidate)
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
