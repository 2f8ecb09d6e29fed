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

import copy
import hashlib
import logging
import os
import shutil
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from codebrain_seg import paths
from codebrain_seg.device import native_bf16
from codebrain_seg.errors import InputError, UserError
from codebrain_seg.io import atomic_path, read_json, write_json
from codebrain_seg.raw_dataset import (
    FILE_ENDING,
    channel_names,
    image_path,
    label_path,
    label_values,
)
from codebrain_seg.results_layout import segmentation_root

logger = logging.getLogger(__name__)

NNUNET_CONFIGURATION = "3d_fullres"
NNUNET_FOLD = "all"
DEFAULT_TRAINER = "nnUNetTrainer"
DEFAULT_PLANS = "nnUNetPlans"
TRAINER_FOLDER = Path(__file__).resolve().parent
_DONE_MARKER = ".codebrain_preprocessed_{plans}"


class SegmenterError(UserError, ValueError):
    """Raised when a segmenter cannot be used for the requested dataset (wrong channels, labels, missing files)."""


@dataclass(frozen=True)
class NnunetFolders:
    """The private nnU-Net folder tree of one dataset and fold."""

    root: Path

    @property
    def raw(self) -> Path:
        """``nnUNet_raw`` of this tree."""
        return self.root / "nnUNet_raw"

    @property
    def preprocessed(self) -> Path:
        """``nnUNet_preprocessed`` of this tree."""
        return self.root / "nnUNet_preprocessed"

    @property
    def results(self) -> Path:
        """``nnUNet_results`` of this tree."""
        return self.root / "nnUNet_results"


def segmentation_folders(dataset_name: str, fold: int) -> NnunetFolders:
    """Private nnU-Net tree of a dataset (``DatasetXXX_Name``) and fold under the results folder."""
    return NnunetFolders(segmentation_root(dataset_name, fold))


def plans_identifier(gpu_memory_gb: float | None) -> str:
    """nnU-Net plans name: ``nnUNetPlans`` for nnU-Net's default GPU memory target, else ``nnUNetPlans_<G>GB``."""
    if gpu_memory_gb is None:
        return DEFAULT_PLANS
    if gpu_memory_gb <= 0:
        raise InputError(f"the GPU memory target must be positive, got {gpu_memory_gb}")
    return f"{DEFAULT_PLANS}_{gpu_memory_gb:g}GB"


def model_folder_name(trainer: str, plans: str, configuration: str = NNUNET_CONFIGURATION) -> str:
    """nnU-Net's results folder name ``Trainer__Plans__configuration``."""
    return f"{trainer}__{plans}__{configuration}"


@contextmanager
def nnunet_environment(folders: NnunetFolders | None = None) -> Iterator[None]:
    """Set the ``nnUNet_*`` variables (and ``nnUNet_extTrainer``) for the block only, then restore them."""
    names = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer")
    saved = {name: os.environ.get(name) for name in names}
    try:
        if folders is not None:
            for name, folder in zip(names, (folders.raw, folders.preprocessed, folders.results)):
                folder.mkdir(parents=True, exist_ok=True)
                os.environ[name] = str(folder)
        extra = [p for p in (saved["nnUNet_extTrainer"] or "").split(os.pathsep) if p]
        if str(TRAINER_FOLDER) not in extra:
            extra.append(str(TRAINER_FOLDER))
        os.environ["nnUNet_extTrainer"] = os.pathsep.join(extra)
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.symlink(source.resolve(), target)
    except OSError:  # file systems without symlinks (some Windows or network shares)
        shutil.copyfile(source, target)


def export_training_cases(raw_dir: Path, case_ids: Sequence[str], folders: NnunetFolders) -> Path:
    """Export labelled cases of a raw dataset as an nnU-Net raw dataset in ``folders.raw`` (links, copy fallback).

    The export is reused when it holds exactly these cases; if it holds others (the dataset or its splits
    changed after the segmenter was made) a SegmenterError asks to delete the stale tree.
    """
    dataset_json = read_json(raw_dir / "dataset.json")
    num_channels = len(channel_names(dataset_json))
    wanted = sorted(case_ids)
    if not wanted:
        raise SegmenterError(f"no labelled training cases to train the segmenter on in {raw_dir}")
    target = folders.raw / raw_dir.name
    if (target / "dataset.json").is_file():
        exported = sorted(p.name[: -len(FILE_ENDING)] for p in (target / "labelsTr").iterdir()
                          if p.name.endswith(FILE_ENDING))
        if exported == wanted:
            return target
        raise SegmenterError(f"{folders.root} was made from other training cases ({len(exported)} exported, "
                             f"{len(wanted)} wanted): the dataset or its splits changed. Delete {folders.root} "
                             f"to export, plan and train the segmenter again.")
    staging = target.with_name(f".{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "imagesTr").mkdir(parents=True)
    (staging / "labelsTr").mkdir()
    for case_id in wanted:
        for channel in range(num_channels):
            _link_or_copy(image_path(raw_dir, case_id, channel), image_path(staging, case_id, channel))
        _link_or_copy(label_path(raw_dir, case_id), label_path(staging, case_id))
    exported_json = dict(dataset_json, numTraining=len(wanted))
    write_json(staging / "dataset.json", exported_json)
    staging.rename(target)
    logger.info("exported %d training cases to %s", len(wanted), target)
    return target


def _dataset_id(dataset_name: str) -> int:
    parsed = paths.parse_dataset_folder_name(dataset_name)
    if parsed is None:
        raise InputError(f"not a DatasetXXX_Name folder name: {dataset_name!r}")
    return parsed[0]


def plan_and_preprocess(folders: NnunetFolders, dataset_name: str, gpu_memory_gb: float | None = None,
                        num_processes: int = 2) -> str:
    """nnU-Net fingerprint, plans (``ExperimentPlanner``) and 3d_fullres preprocessing; returns the plans name.

    Each step is skipped when its result exists. nnU-Net starts its workers with ``spawn``: a script calling this
    needs an ``if __name__ == "__main__":`` guard.
    """
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


def trainer_class(name: str) -> type:
    """The nnU-Net trainer class of a name: this project's short trainers, nnU-Net's default, or nnU-Net's search."""
    # lazy: nnunetv2 is heavy to import and needed only here
    from evaluation.segmentation.short_trainer import TRAINERS

    if name in TRAINERS:
        return TRAINERS[name]
    # lazy: nnunetv2 is heavy to import and needed only here
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    if name == nnUNetTrainer.__name__:
        return nnUNetTrainer
    # lazy: nnunetv2 is heavy to import and needed only here
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    with nnunet_environment():
        try:
            return recursive_find_trainer_class_by_name(name)
        except Exception as error:  # nnU-Net imports every trainer module while searching; any may fail
            raise SegmenterError(f"nnU-Net trainer {name!r} could not be found or imported "
                                 f"({type(error).__name__}: {error}). This project's trainers: "
                                 f"{', '.join(sorted(TRAINERS))}; nnU-Net's default: nnUNetTrainer") from error


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
    plans["continue_training"] = latest.is_file()
    with nnunet_environment(folders):
        nnunet_trainer = cls(plans=plans, configuration=NNUNET_CONFIGURATION, fold=NNUNET_FOLD,
                             dataset_json=dataset_json, device=torch.device(device))
        if latest.is_file():
            logger.info("resuming segmenter training from %s", latest)
            nnunet_trainer.load_checkpoint(str(latest))
        nnunet_trainer.run_training()
    return model_folder


@dataclass
class ModelInfo:
    """What an nnU-Net model folder declares: its channels, labels, folds with a final checkpoint, trainer."""

    folder: Path
    dataset_json: dict[str, Any]
    plans: dict[str, Any]
    folds: list[str]

    @property
    def channel_names(self) -> list[str]:
        """Input channels in file order."""
        return channel_names(self.dataset_json)

    def fingerprint(self) -> dict[str, Any]:
        """Identity of the weights (path, size and mtime of each checkpoint), to invalidate cached predictions."""
        checkpoints = {}
        for fold in self.folds:
            stat = (self.folder / f"fold_{fold}" / "checkpoint_final.pth").stat()
            checkpoints[fold] = [stat.st_size, stat.st_mtime_ns]
        return {"model_folder": str(self.folder.resolve()), "checkpoints": checkpoints}


def read_model_folder(folder: Path) -> ModelInfo:
    """Read and check an nnU-Net model folder (``plans.json``, ``dataset.json``, ``fold_*/checkpoint_final.pth``).

    Numbered folds are used together (nnU-Net's ensemble) when present, else ``fold_all``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise SegmenterError(f"segmenter folder {folder} does not exist")
    for name in ("plans.json", "dataset.json"):
        if not (folder / name).is_file():
            raise SegmenterError(f"{folder} is not an nnU-Net model folder: {name} is missing (expected the "
                                 f"<Trainer>__<Plans>__<configuration> folder that holds fold_X/)")
    trained = sorted(p.name[len("fold_"):] for p in folder.glob("fold_*") if (p / "checkpoint_final.pth").is_file())
    numbered = sorted((f for f in trained if f.isdigit()), key=int)
    folds = numbered or [f for f in trained if f == NNUNET_FOLD]
    if not folds:
        raise SegmenterError(f"{folder} has no fold_*/checkpoint_final.pth: the model is not trained (to the end)")
    return ModelInfo(folder, read_json(folder / "dataset.json"), read_json(folder / "plans.json"), folds)


def check_compatible(model: ModelInfo, dataset_json: dict[str, Any]) -> None:
    """Raise SegmenterError unless the model takes the dataset's channels (same order) and predicts its labels."""
    wanted = channel_names(dataset_json)
    if [c.lower() for c in model.channel_names] != [c.lower() for c in wanted]:
        raise SegmenterError(f"segmenter {model.folder} was trained on channels {model.channel_names}, but the "
                             f"dataset has {wanted}: a segmenter must take the dataset's sequences in its order")
    if label_values(model.dataset_json) != label_values(dataset_json):
        raise SegmenterError(f"segmenter {model.folder} predicts labels {sorted(label_values(model.dataset_json))}"
                             f", the dataset's labels are {sorted(label_values(dataset_json))}")


PRECISIONS = ("auto", "fp32", "bf16")


def resolve_precision(precision: str, device: str = "cpu") -> str:
    """``fp32`` or ``bf16`` for the segmenter's network on ``device``.

    ``auto``: bf16 autocast on a CPU that computes bf16 natively (AMX or AVX512-BF16, the project's training
    precision ``auto``; about 3x faster for a 3D U-Net), fp32 on other CPUs. On a GPU nnU-Net autocasts itself
    (fp16), so ``auto`` and ``fp32`` leave it alone there.
    """
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "bf16" and device != "cpu":
        raise InputError("bf16 autocast of the segmenter is for CPUs; on a GPU nnU-Net autocasts by itself")
    if precision != "auto":
        return precision
    return "bf16" if device == "cpu" and native_bf16(torch.device("cpu")) else "fp32"


class Segmenter:
    """An nnU-Net model loaded for prediction (``nnUNetPredictor``), one case at a time, images given as files.

    ``precision`` (:func:`resolve_precision`): ``bf16`` runs the network under CPU bf16 autocast (nnU-Net
    accumulates the sliding-window logits in fp16 in any case).
    """

    def __init__(self, model: ModelInfo, device: str = "cpu", tile_step_size: float = 0.5,
                 use_mirroring: bool = True, precision: str = "auto") -> None:
        # lazy: nnunetv2 is heavy to import and needed only here
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
        from nnunetv2.utilities.label_handling.label_handling import (
            determine_num_input_channels,
        )
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        if not 0 < tile_step_size <= 1:
            raise InputError(f"tile_step_size must lie in (0, 1], got {tile_step_size}")
        self.precision = resolve_precision(precision, torch.device(device).type)
        self.model = model
        checkpoints = [torch.load(model.folder / f"fold_{fold}" / "checkpoint_final.pth", map_location="cpu",
                                  weights_only=False) for fold in model.folds]
        first = checkpoints[0]
        plans_manager = PlansManager(model.plans)
        configuration_manager = plans_manager.get_configuration(first["init_args"]["configuration"])
        label_manager = plans_manager.get_label_manager(model.dataset_json)
        cls = trainer_class(first["trainer_name"])
        network = cls.build_network_architecture(
            plans_manager, configuration_manager,
            determine_num_input_channels(plans_manager, configuration_manager, model.dataset_json),
            label_manager.num_segmentation_heads, enable_deep_supervision=False)
        parameters = [checkpoint["network_weights"] for checkpoint in checkpoints]
        network.load_state_dict(parameters[0])
        self.predictor = nnUNetPredictor(tile_step_size=tile_step_size, use_gaussian=True,
                                         use_mirroring=use_mirroring, perform_everything_on_device=False,
                                         device=torch.device(device), verbose=False, allow_tqdm=False)
        self.predictor.manual_initialization(network, plans_manager, configuration_manager, parameters,
                                             model.dataset_json, first["trainer_name"],
                                             first.get("inference_allowed_mirroring_axes"))
        self.reader = plans_manager.image_reader_writer_class()
        self.predictions_made = 0

    def read_images(self, files: Sequence[Path]) -> tuple[np.ndarray, dict[str, Any]]:
        """Read a case's channel files with the model's reader: (C, ...) float32 in the reader's axis order."""
        return self.reader.read_images([str(f) for f in files])

    def predict(self, images: np.ndarray, properties: dict[str, Any], output: Path) -> None:
        """Segment one case (arrays from ``read_images``) and write the label map atomically to ``output``."""
        # lazy: nnunetv2 is heavy to import and needed only here
        from nnunetv2.inference.export_prediction import (
            convert_predicted_logits_to_segmentation_with_correct_shape,
        )

        predictor = self.predictor
        properties = copy.deepcopy(properties)
        preprocessor = predictor.configuration_manager.preprocessor_class(verbose=False)
        data, _, properties = preprocessor.run_case_npy(images, None, properties, predictor.plans_manager,
                                                        predictor.configuration_manager, predictor.dataset_json)
        with torch.autocast("cpu", dtype=torch.bfloat16) if self.precision == "bf16" else nullcontext():
            logits = predictor.predict_logits_from_preprocessed_data(torch.from_numpy(data)).cpu()
        segmentation = convert_predicted_logits_to_segmentation_with_correct_shape(
            logits, predictor.plans_manager, predictor.configuration_manager, predictor.label_manager, properties)
        with atomic_path(output) as temp:
            self.reader.write_seg(segmentation, str(temp), properties)
        self.predictions_made += 1


def external_tag(folder: Path) -> str:
    """Folder name under which evaluations of a user's model folder are kept (name + short hash of its path)."""
    digest = hashlib.sha1(str(Path(folder).resolve()).encode()).hexdigest()[:8]
    return f"external__{Path(folder).resolve().name}__{digest}"


def prepare_trained_segmenter(raw_dir: Path, training_cases: Sequence[str], fold: int, trainer: str = DEFAULT_TRAINER,
                              gpu_memory_gb: float | None = None, device: str = "cpu", num_processes: int = 2,
                              train_if_missing: bool = True) -> Path:
    """Export, plan, preprocess and train the fold's segmenter as needed; returns its model folder.

    With ``train_if_missing=False`` nothing is made: the folder of an earlier training is returned, or a
    SegmenterError says how to make one.
    """
    folders = segmentation_folders(raw_dir.name, fold)
    plans_name = plans_identifier(gpu_memory_gb)
    model_folder = folders.results / raw_dir.name / model_folder_name(trainer, plans_name)
    if (model_folder / f"fold_{NNUNET_FOLD}" / "checkpoint_final.pth").is_file():
        return model_folder
    if not train_if_missing:
        found = sorted(p.name for p in (folders.results / raw_dir.name).glob("*__*__*")
                       if (p / f"fold_{NNUNET_FOLD}" / "checkpoint_final.pth").is_file()) \
            if (folders.results / raw_dir.name).is_dir() else []
        hint = f" Trained segmenters of this fold: {', '.join(found)}." if found else ""
        raise SegmenterError(f"no trained segmenter {model_folder.name} for fold {fold}: pass --train-segmenter to "
                             f"train one (nnU-Net 3d_fullres on the fold's training cases) or --segmenter "
                             f"NNUNET_MODEL_FOLDER to use an existing nnU-Net model.{hint}")
    export_training_cases(raw_dir, training_cases, folders)
    plans_name = plan_and_preprocess(folders, raw_dir.name, gpu_memory_gb, num_processes)
    return train(folders, raw_dir.name, trainer, plans_name, device)
