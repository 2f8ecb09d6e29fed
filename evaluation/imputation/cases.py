"""The complete cases an imputation evaluation scores: a fold's validation cases, the dataset's test cases or a
folder in nnU-Net naming, and reading one case in RAS voxel order."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from codebrain_seg import paths
from codebrain_seg.errors import InputError, MissingFileError
from codebrain_seg.geometry import to_canonical
from codebrain_seg.io import read_json, read_nifti
from codebrain_seg.raw_dataset import FILE_ENDING, list_cases

logger = logging.getLogger(__name__)

@dataclass
class CaseFiles:
    """A complete case to evaluate: one image per sequence (channel order) and an optional label map."""

    case_id: str
    images: list[Path]
    label: Path | None


def _folder_cases(images_dir: Path, labels_dir: Path | None, num_channels: int) -> list[CaseFiles]:
    """Complete cases of a folder in nnU-Net naming; incomplete ones are skipped with a warning."""
    result = []
    for case_id in list_cases(images_dir.parent, images_dir.name):
        images = [images_dir / f"{case_id}_{channel:04d}{FILE_ENDING}" for channel in range(num_channels)]
        absent = [p.name for p in images if not p.is_file()]
        if absent:
            logger.warning("case %s skipped: no ground truth for %s", case_id, ", ".join(absent))
            continue
        label = labels_dir / f"{case_id}{FILE_ENDING}" if labels_dir is not None else None
        result.append(CaseFiles(case_id, images, label if label is not None and label.is_file() else None))
    return result


def find_cases(dataset: str | int, fold: int | str, cases: str, num_channels: int) -> list[CaseFiles]:
    """The cases to evaluate.

    Args:
        dataset: dataset id or name.
        fold: fold whose validation cases ``val`` means.
        cases: ``val`` (the fold's validation cases in ``imagesTr``), ``test`` (``imagesTs``, labels from
            ``labelsTs``) or a folder of ``CASE_XXXX.nii.gz`` files (labels from the sibling ``labels*`` folder
            of an ``images*`` folder, if any).
        num_channels: C.
    """
    if cases == "val":
        raw_dir = paths.raw_dataset_dir(dataset)
        splits_path = paths.preprocessed_root() / raw_dir.name / "splits_final.json"
        if not splits_path.is_file():
            raise MissingFileError(f"{splits_path} does not exist: run codebrain_plan_and_preprocess first")
        splits = read_json(splits_path)
        if not 0 <= int(fold) < len(splits):
            raise InputError(f"fold {fold} is not in {splits_path} ({len(splits)} folds)")
        wanted = set(splits[int(fold)]["val"])
        found = _folder_cases(raw_dir / "imagesTr", raw_dir / "labelsTr", num_channels)
        selected = [case for case in found if case.case_id in wanted]
    else:
        if cases == "test":
            raw_dir = paths.raw_dataset_dir(dataset)
            images_dir, labels_dir = raw_dir / "imagesTs", raw_dir / "labelsTs"
        else:
            images_dir = Path(cases)
            labels_dir = (images_dir.parent / ("labels" + images_dir.name[len("images"):])
                          if images_dir.name.startswith("images") else None)
        if not images_dir.is_dir():
            raise MissingFileError(f"{images_dir} is not a folder of cases")
        selected = _folder_cases(images_dir, labels_dir, num_channels)
    if not selected:
        raise InputError(f"no complete case to evaluate for --cases {cases}")
    return selected


def load_case(case: CaseFiles) -> tuple[np.ndarray, np.ndarray | None]:
    """Images ``(C, X, Y, Z)`` and label in RAS voxel order; raises if the sequences are on different grids."""
    volumes = [read_nifti(path) for path in case.images]
    reference = volumes[0]
    for path, volume in zip(case.images[1:], volumes[1:]):
        if volume.data.shape != reference.data.shape or not np.allclose(volume.affine, reference.affine, atol=1e-3):
            raise InputError(f"case {case.case_id}: {path.name} is not on the grid of {case.images[0].name}")
    images = to_canonical(np.stack([v.data for v in volumes]), reference.affine)
    label = None
    if case.label is not None:
        label = to_canonical(read_nifti(case.label, dtype=np.int16).data, reference.affine)
    return images, label
