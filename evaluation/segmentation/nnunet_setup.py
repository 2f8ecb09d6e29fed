"""nnU-Net's private folder tree of a dataset and fold, its environment variables, the export of the fold's training
cases into it, and finding a trainer class by name.

Everything nnU-Net writes for a fold lives beside the project's results, never in a user's own nnU-Net folders::

    $codebrain_results/DatasetXXX_Name/segmentation/fold_F/
        nnUNet_raw/DatasetXXX_Name/            the fold's labelled training cases (symlinks; copies if links fail)
        nnUNet_preprocessed/DatasetXXX_Name/   nnU-Net's fingerprint, plans and 3d_fullres arrays
        nnUNet_results/DatasetXXX_Name/<Trainer>__<Plans>__3d_fullres/fold_all/checkpoint_final.pth

The ``nnUNet_*`` variables are set in ``os.environ`` only for the duration of each call (nnU-Net 2.8 reads them
when used). ``nnUNet_extTrainer`` gets this package's folder appended so nnU-Net's own tools find the short
trainers.
"""
from __future__ import annotations

import logging
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from codebrain_seg import paths
from codebrain_seg.errors import InputError, UserError
from codebrain_seg.io import read_json, write_json
from codebrain_seg.raw_dataset import (
    FILE_ENDING,
    channel_names,
    image_path,
    label_path,
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


def export_cases(folders: NnunetFolders, dataset_name: str, dataset_json: Mapping[str, Any],
                 images: Mapping[str, Sequence[Path]], labels: Mapping[str, Path]) -> Path:
    """Write an nnU-Net raw dataset ``folders.raw/<dataset_name>`` of the given files (links, copy fallback).

    Args:
        dataset_json: the export's ``dataset.json`` (its ``channel_names`` in the order of each case's files).
        images: case id -> one file per channel; labels: case id -> label map.

    The export is reused when it holds exactly these cases; if it holds others (the dataset or its splits changed
    after the segmenter was made) a SegmenterError asks to delete the stale tree. Written under a temporary name
    and renamed, so an interrupted export is redone.
    """
    wanted = sorted(images)
    if not wanted:
        raise SegmenterError(f"no labelled training cases to train the segmenter on for {dataset_name}")
    target = folders.raw / dataset_name
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
        for channel, source in enumerate(images[case_id]):
            _link_or_copy(Path(source), image_path(staging, case_id, channel))
        _link_or_copy(Path(labels[case_id]), label_path(staging, case_id))
    write_json(staging / "dataset.json", dict(dataset_json, numTraining=len(wanted)))
    staging.rename(target)
    logger.info("exported %d training cases to %s", len(wanted), target)
    return target


def export_training_cases(raw_dir: Path, case_ids: Sequence[str], folders: NnunetFolders) -> Path:
    """Export labelled cases of a raw dataset, every channel, as an nnU-Net raw dataset (:func:`export_cases`)."""
    dataset_json = read_json(raw_dir / "dataset.json")
    num_channels = len(channel_names(dataset_json))
    images = {case: [image_path(raw_dir, case, c) for c in range(num_channels)] for case in case_ids}
    return export_cases(folders, raw_dir.name, dataset_json, images,
                        {case: label_path(raw_dir, case) for case in case_ids})


def _dataset_id(dataset_name: str) -> int:
    parsed = paths.parse_dataset_folder_name(dataset_name)
    if parsed is None:
        raise InputError(f"not a DatasetXXX_Name folder name: {dataset_name!r}")
    return parsed[0]


def project_trainers() -> dict[str, type]:
    """This project's nnU-Net trainers by the name nnU-Net stores in checkpoints (short trainers, CPU recipe)."""
    # lazy: nnunetv2 is heavy to import and needed only here
    from evaluation.segmentation import cpu_segmenter, short_trainer

    return {**short_trainer.TRAINERS, **cpu_segmenter.TRAINERS}


def trainer_class(name: str) -> type:
    """The nnU-Net trainer class of a name: this project's trainers (short, CPU), nnU-Net's default, or nnU-Net's
    search."""
    known = project_trainers()
    if name in known:
        return known[name]
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
                                 f"{', '.join(sorted(known))}; nnU-Net's default: nnUNetTrainer") from error


