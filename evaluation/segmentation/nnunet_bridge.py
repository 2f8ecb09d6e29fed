"""nnU-Net v2 as a library: export a raw dataset, plan and preprocess, train and predict with a 3D U-Net segmenter.

Everything nnU-Net writes for a fold lives in a private folder tree beside the project's results, so that it
never mixes with a user's own nnU-Net folders::

    $codebrain_results/DatasetXXX_Name/segmentation/fold_F/
        nnUNet_raw/DatasetXXX_Name/            the fold's labelled training cases (symlinks; copies if links fail)
        nnUNet_preprocessed/DatasetXXX_Name/   nnU-Net's fingerprint, plans and 3d_fullres arrays
        nnUNet_results/DatasetXXX_Name/<Trainer>__<Plans>__3d_fullres/fold_all/checkpoint_final.pth

The segmenter is trained on nnU-Net's fold ``all`` of that export, i.e. on exactly the training cases of the
project's fold F; the fold's validation cases are never seen by nnU-Net's planning or training. nnU-Net's own
final validation is skipped (with fold ``all`` it would re-predict the training cases); held-out scoring is the
job of :mod:`evaluation.segmentation.evaluate`.

The ``nnUNet_*`` variables are set in ``os.environ`` only for the duration of each call (nnU-Net 2.8 reads them
when used). ``nnUNet_extTrainer`` gets this package's folder appended so nnU-Net's own tools find the short
trainers. An existing nnU-Net model folder (``<Trainer>__<Plans>__<configuration>``, with ``plans.json``,
``dataset.json`` and ``fold_*/checkpoint_final.pth``) is used as it is.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from codebrain_seg.errors import InputError
from codebrain_seg.io import read_json, write_json
from evaluation.segmentation.nnunet_setup import (  # noqa: F401 (the bridge's API)
    _DONE_MARKER,
    DEFAULT_PLANS,
    DEFAULT_TRAINER,
    NNUNET_CONFIGURATION,
    NNUNET_FOLD,
    TRAINER_FOLDER,
    NnunetFolders,
    SegmenterError,
    _dataset_id,
    export_cases,
    export_training_cases,
    model_folder_name,
    nnunet_environment,
    plans_identifier,
    project_trainers,
    segmentation_folders,
    trainer_class,
)
from evaluation.segmentation.segmenter import (  # noqa: F401 (the bridge's API)
    PRECISIONS,
    ModelInfo,
    Segmenter,
    SegmenterMapping,
    check_compatible,
    external_tag,
    read_model_folder,
    resolve_precision,
)

logger = logging.getLogger(__name__)

# Segmenter recipes: nnU-Net's default plans, or the CPU recipe (2 mm isotropic, a narrow U-Net, a time-guarded
# schedule; evaluation.segmentation.cpu_segmenter).
RECIPES = ("default", "cpu")

TRAINING_RECORD = "training.json"


def plans_name_of(recipe: str = "default", gpu_memory_gb: float | None = None) -> str:
    """nnU-Net plans name of a segmenter recipe (:data:`RECIPES`): ``nnUNetPlans[_<G>GB]``, or the CPU plans'."""
    if recipe not in RECIPES:
        raise InputError(f"segmenter recipe must be one of {', '.join(RECIPES)}, got {recipe!r}")
    if recipe == "cpu":
        if gpu_memory_gb is not None:
            raise InputError("--seg-gpu-memory-gb sizes nnU-Net's default plans; the cpu recipe plans its own "
                             "(2 mm, patch 64x80x64, batch 2): give one of them")
        # lazy: nnunetv2 is heavy to import and needed only here
        from evaluation.segmentation.cpu_segmenter import cpu_plans_identifier

        return cpu_plans_identifier()
    return plans_identifier(gpu_memory_gb)


def plan_and_preprocess(folders: NnunetFolders, dataset_name: str, gpu_memory_gb: float | None = None,
                        num_processes: int = 2, recipe: str = "default") -> str:
    """nnU-Net fingerprint, plans and 3d_fullres preprocessing; returns the plans name.

    ``recipe`` ``default``: nnU-Net's ``ExperimentPlanner`` (GPU memory target ``gpu_memory_gb``); ``cpu``: the
    CPU recipe's planner (``evaluation.segmentation.cpu_segmenter``). Each step is skipped when its result exists.
    nnU-Net starts its workers with ``spawn``: a script calling this needs an ``if __name__ == "__main__":`` guard.
    """
    if plans_name_of(recipe, gpu_memory_gb) != plans_identifier(gpu_memory_gb):
        # lazy: nnunetv2 is heavy to import and needed only here
        from evaluation.segmentation.cpu_segmenter import plan_and_preprocess_cpu

        with nnunet_environment(folders):
            return plan_and_preprocess_cpu(dataset_name, folders.preprocessed / dataset_name,
                                           num_processes=num_processes)
    # lazy: nnunetv2 is heavy to import and needed only here
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import (
        ExperimentPlanner,
    )
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprint_dataset,
        plan_experiment_dataset,
        preprocess_dataset,
    )

    plans_name = plans_identifier(gpu_memory_gb)
    out = folders.preprocessed / dataset_name
    marker = out / _DONE_MARKER.format(plans=plans_name)
    if marker.is_file():
        return plans_name
    dataset_id = _dataset_id(dataset_name)
    with nnunet_environment(folders):
        extract_fingerprint_dataset(dataset_id, num_processes=num_processes, clean=False, verbose=False,
                                    show_progress_bar=False)
        if not (out / f"{plans_name}.json").is_file():
            kwargs = {} if gpu_memory_gb is None else {"gpu_memory_target_in_gb": gpu_memory_gb}
            plan_experiment_dataset(dataset_id, ExperimentPlanner, overwrite_plans_name=plans_name, **kwargs)
        preprocess_dataset(dataset_id, plans_name, [NNUNET_CONFIGURATION], [num_processes], verbose=False,
                           show_progress_bar=False)
    marker.touch()
    plans = read_json(out / f"{plans_name}.json")["configurations"][NNUNET_CONFIGURATION]
    logger.info("nnU-Net plans %s: patch %s, batch %s, spacing %s", plans_name, plans["patch_size"],
                plans["batch_size"], plans["spacing"])
    return plans_name


def train(folders: NnunetFolders, dataset_name: str, trainer: str, plans_name: str, device: str = "cpu") -> Path:
    """Train (or resume, or reuse) a 3d_fullres segmenter on nnU-Net fold ``all``; returns the model folder."""
    model_folder = folders.results / dataset_name / model_folder_name(trainer, plans_name)
    fold_folder = model_folder / f"fold_{NNUNET_FOLD}"
    if (fold_folder / "checkpoint_final.pth").is_file():
        return model_folder
    cls = trainer_class(trainer)
    preprocessed = folders.preprocessed / dataset_name
    plans = read_json(preprocessed / f"{plans_name}.json")
    dataset_json = read_json(preprocessed / "dataset.json")
    latest = fold_folder / "checkpoint_latest.pth"
    resumed = latest.is_file()
    plans["continue_training"] = resumed  # nnU-Net takes the key out of the dict
    with nnunet_environment(folders):
        nnunet_trainer = cls(plans=plans, configuration=NNUNET_CONFIGURATION, fold=NNUNET_FOLD,
                             dataset_json=dataset_json, device=torch.device(device))
        if latest.is_file():
            logger.info("resuming segmenter training from %s", latest)
            nnunet_trainer.load_checkpoint(str(latest))
        started = time.perf_counter()
        nnunet_trainer.run_training()
    # What the training cost, for the tables' budget line (a resumed run counts this process's part only).
    write_json(model_folder / TRAINING_RECORD, {
        "trainer": trainer, "plans": plans_name, "seconds": round(time.perf_counter() - started, 1),
        "resumed": resumed, "torch_threads": torch.get_num_threads(),
        "epochs": int(getattr(nnunet_trainer, "num_epochs", 0)),
        "iterations_per_epoch": int(getattr(nnunet_trainer, "num_iterations_per_epoch", 0))})
    return model_folder


def training_budget(model_folder: Path) -> dict[str, Any]:
    """What a model folder's training cost (``training.json``, written by :func:`train`), else what its trainer
    plans when it is this project's or nnU-Net's default (a folder trained elsewhere: the trainer's name only)."""
    record = Path(model_folder) / TRAINING_RECORD
    if record.is_file():
        return read_json(record)
    trainer = Path(model_folder).name.split("__")[0]
    known = project_trainers()
    if trainer in known:
        cls = known[trainer]
        return {"trainer": trainer, "epochs": cls.EPOCHS, "iterations_per_epoch": cls.ITERATIONS_PER_EPOCH,
                "seconds": None}
    if trainer == DEFAULT_TRAINER:  # nnU-Net's schedule: 1000 epochs of 250 iterations
        return {"trainer": trainer, "epochs": 1000, "iterations_per_epoch": 250, "seconds": None}
    return {"trainer": trainer}


def prepare_segmenter(folders: NnunetFolders, dataset_name: str, export: Callable[[], Path], trainer: str,
                      gpu_memory_gb: float | None = None, device: str = "cpu", num_processes: int = 2,
                      train_if_missing: bool = True, what: str = "segmenter", recipe: str = "default") -> Path:
    """Export (``export()``), plan, preprocess and train a segmenter in ``folders`` as needed; its model folder.

    With ``train_if_missing=False`` nothing is made: the folder of an earlier training is returned, or a
    SegmenterError says how to make one.
    """
    plans_name = plans_name_of(recipe, gpu_memory_gb)
    model_folder = folders.results / dataset_name / model_folder_name(trainer, plans_name)
    if (model_folder / f"fold_{NNUNET_FOLD}" / "checkpoint_final.pth").is_file():
        return model_folder
    if not train_if_missing:
        found = sorted(p.name for p in (folders.results / dataset_name).glob("*__*__*")
                       if (p / f"fold_{NNUNET_FOLD}" / "checkpoint_final.pth").is_file()) \
            if (folders.results / dataset_name).is_dir() else []
        hint = f" Trained segmenters there: {', '.join(found)}." if found else ""
        raise SegmenterError(f"no trained {what} {model_folder.name}: pass --train-segmenter to train it (nnU-Net "
                             f"3d_fullres on the fold's training cases) or --segmenter NNUNET_MODEL_FOLDER to use an "
                             f"existing nnU-Net model.{hint}")
    export()
    plans_name = plan_and_preprocess(folders, dataset_name, gpu_memory_gb, num_processes, recipe)
    return train(folders, dataset_name, trainer, plans_name, device)


def prepare_trained_segmenter(raw_dir: Path, training_cases: Sequence[str], fold: int, trainer: str = DEFAULT_TRAINER,
                              gpu_memory_gb: float | None = None, device: str = "cpu", num_processes: int = 2,
                              train_if_missing: bool = True, recipe: str = "default") -> Path:
    """The fold's full-modality segmenter (:func:`prepare_segmenter` on the fold's labelled training cases)."""
    folders = segmentation_folders(raw_dir.name, fold)
    return prepare_segmenter(folders, raw_dir.name, lambda: export_training_cases(raw_dir, training_cases, folders),
                             trainer, gpu_memory_gb, device, num_processes, train_if_missing,
                             what=f"segmenter for fold {fold}", recipe=recipe)
