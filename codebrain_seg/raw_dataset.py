"""The nnU-Net v2 raw dataset format: ``dataset.json`` and a writer that never leaves a half-written dataset.

Layout written (``$codebrain_raw/DatasetXXX_Name/``)::

    imagesTr/CASE_0000.nii.gz ...   every case, one file per channel, channel order of dataset.json
    labelsTr/CASE.nii.gz            only for cases that have a label map
    dataset.json                    written last: a dataset without it is unfinished

Cases without labels stay in ``imagesTr`` (imputation trains on them); the segmentation bridge exports only the
labelled ones to nnU-Net.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from codebrain_seg.errors import ExistingFileError, InputError, MissingFileError
from codebrain_seg.io import Volume, atomic_path, read_json, write_json, write_nifti

FILE_ENDING = ".nii.gz"
BRATS_CHANNELS = ("T1", "T1Gd", "T2", "FLAIR")
IXI_CHANNELS = ("T1", "T2", "PD")
# Output labels whatever the BraTS year: 1 necrotic core, 2 oedema, 3 enhancing tumour.
BRATS_LABEL_NAMES = {1: "NCR", 2: "ED", 3: "ET"}
# Region-based training as in nnU-Net's BraTS setup; a list value is a region of labels.
BRATS_REGIONS = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [1, 3], "enhancing tumor": [3]}
# Painting regions back into labels: WT -> 2 (oedema), then TC -> 1 overwrites, then ET -> 3 overwrites.
BRATS_REGIONS_CLASS_ORDER = [2, 1, 3]


def make_dataset_json(channel_names: Sequence[str], num_training: int, labels: dict[str, Any] | None = None,
                      regions_class_order: list[int] | None = None, name: str = "", description: str = "",
                      **extra: Any) -> dict[str, Any]:
    """dataset.json content in nnU-Net v2 form (``channel_names`` keyed "0", "1", ...)."""
    content: dict[str, Any] = {
        "name": name,
        "description": description,
        "channel_names": {str(i): channel for i, channel in enumerate(channel_names)},
        "labels": labels if labels is not None else {"background": 0},
        "numTraining": int(num_training),
        "file_ending": FILE_ENDING,
    }
    if regions_class_order is not None:
        content["regions_class_order"] = list(regions_class_order)
    content.update(extra)
    return content


def channel_names(dataset_json: dict[str, Any]) -> list[str]:
    """Channel names in file order (``_0000``, ``_0001``, ...)."""
    names = dataset_json["channel_names"]
    return [names[str(i)] for i in range(len(names))]


def label_values(dataset_json: dict[str, Any]) -> set[int]:
    """Integer label values allowed in the label maps (regions expand to their member labels)."""
    values: set[int] = set()
    for value in dataset_json.get("labels", {}).values():
        values.update(value if isinstance(value, list) else [value])
    return {int(v) for v in values}


def subject_of_cases(dataset_json: dict[str, Any], case_ids: Sequence[str]) -> dict[str, str] | None:
    """Case id -> subject id from dataset.json's ``subject_pattern`` (a regex, group 1 = the subject), else None.

    Datasets with several cases per subject (the ED and ES frames of a cardiac cine) name the rule so that the
    splits keep a subject's cases together; without the key every case is its own subject. A case id the pattern
    does not match is its own subject.
    """
    pattern = dataset_json.get("subject_pattern")
    if pattern is None:
        return None
    try:
        compiled = re.compile(pattern)
    except re.error as error:
        raise InputError(f"dataset.json subject_pattern {pattern!r} is not a regular expression: {error}") from None
    if compiled.groups < 1:
        raise InputError(f"dataset.json subject_pattern {pattern!r} needs a group (the subject id)")
    subjects = {}
    for case_id in case_ids:
        match = compiled.match(case_id)
        subjects[case_id] = match.group(1) if match else case_id
    return subjects


def list_cases(raw_dir: Path, images_folder: str = "imagesTr") -> list[str]:
    """Case ids of a raw folder, from its ``CASE_0000`` files, sorted."""
    suffix = "_0000" + FILE_ENDING
    folder = raw_dir / images_folder
    if not folder.is_dir():
        return []
    return sorted(p.name[: -len(suffix)] for p in folder.iterdir() if p.name.endswith(suffix))


def image_path(raw_dir: Path, case_id: str, channel: int, images_folder: str = "imagesTr") -> Path:
    """Path of one channel of one case."""
    return raw_dir / images_folder / f"{case_id}_{channel:04d}{FILE_ENDING}"


def label_path(raw_dir: Path, case_id: str) -> Path:
    """Path of a case's label map (may not exist)."""
    return raw_dir / "labelsTr" / f"{case_id}{FILE_ENDING}"


def load_dataset_json(raw_dir: Path) -> dict[str, Any]:
    """Read and sanity-check a raw dataset's dataset.json."""
    path = raw_dir / "dataset.json"
    if not path.is_file():
        raise MissingFileError(f"{raw_dir} has no dataset.json (unfinished conversion or not a raw dataset)")
    content = read_json(path)
    if not isinstance(content, dict):
        raise InputError(f"{path}: expected a JSON object with channel_names and file_ending")
    for key in ("channel_names", "file_ending"):
        if key not in content:
            raise InputError(f"{path}: missing key {key!r}")
    if content["file_ending"] != FILE_ENDING:
        raise InputError(f"{path}: only {FILE_ENDING} is supported, got {content['file_ending']!r}")
    check_channel_names(content["channel_names"], path)
    labels = content.get("labels")
    if labels is not None and (not isinstance(labels, dict) or not all(
            isinstance(v, int) or (isinstance(v, list) and all(isinstance(i, int) for i in v))
            for v in labels.values())):
        raise InputError(f"{path}: labels must map names to label values or lists of them, e.g. "
                         f'{{"background": 0, "tumour": 1}}, got {labels!r}')
    # labels are optional: imputation needs none (segmentation evaluation asks for them where it needs them)
    content.setdefault("labels", {"background": 0})
    return content


def check_channel_names(names: Any, path: Path | str = "dataset.json") -> None:
    """``channel_names`` must be nnU-Net v2's object ``{"0": "T1", "1": "T2", ...}`` of unique names."""
    example = '{"0": "T1", "1": "T2", "2": "FLAIR"}'
    if not isinstance(names, dict):
        raise InputError(f"{path}: channel_names must be an object keyed by channel number, e.g. {example}, not a "
                         f"{type(names).__name__} ({names!r})")
    expected = [str(i) for i in range(len(names))]
    if sorted(names, key=lambda k: (len(k), k)) != expected:
        raise InputError(f"{path}: channel_names keys must be {', '.join(expected)} (the _0000, _0001 ... file "
                         f"numbers), got {', '.join(map(str, names))}")
    values = list(names.values())
    if not all(isinstance(v, str) and v for v in values) or len(set(values)) != len(values):
        raise InputError(f"{path}: channel_names values must be distinct sequence names, got {values!r}")


class RawDatasetWriter:
    """Writes a raw dataset into a staging folder and moves it into place only when complete.

    A rerun after an interruption finds the staging folder and skips the cases already written there.
    """

    def __init__(self, target_dir: Path, overwrite: bool = False) -> None:
        self.target_dir = Path(target_dir)
        if self.target_dir.exists() and not overwrite:
            raise ExistingFileError(f"{self.target_dir} already exists; remove it or pass --overwrite")
        self.staging_dir = self.target_dir.with_name(f".{self.target_dir.name}.partial")
        self.overwrite = overwrite
        for sub in ("imagesTr", "labelsTr"):
            (self.staging_dir / sub).mkdir(parents=True, exist_ok=True)
        self.written_cases: list[str] = []

    def _done_marker(self, case_id: str) -> Path:
        return self.staging_dir / ".done" / case_id

    def is_written(self, case_id: str) -> bool:
        """True if a previous (interrupted) run already wrote this case completely."""
        return self._done_marker(case_id).exists()

    def write_case(self, case_id: str, images: Sequence[Volume | Path], label: np.ndarray | None = None,
                   label_reference: Volume | None = None) -> None:
        """Write one case: images as Volumes (re-encoded float32) or existing files (copied byte for byte)."""
        for channel, image in enumerate(images):
            target = image_path(self.staging_dir, case_id, channel)
            if isinstance(image, Volume):
                write_nifti(target, image.data.astype(np.float32), image.affine, image.header)
            else:
                with atomic_path(target) as temp:
                    shutil.copyfile(image, temp)
        if label is not None:
            reference = label_reference if label_reference is not None else images[0]
            if not isinstance(reference, Volume):
                raise InputError("label_reference must be a Volume when images are given as files")
            write_nifti(label_path(self.staging_dir, case_id), label.astype(np.uint8), reference.affine,
                        reference.header)
        marker = self._done_marker(case_id)
        marker.parent.mkdir(exist_ok=True)
        marker.touch()
        self.written_cases.append(case_id)

    def finish(self, dataset_json: dict[str, Any]) -> Path:
        """Write dataset.json and move the staging folder to its final place."""
        shutil.rmtree(self.staging_dir / ".done", ignore_errors=True)
        labels_dir = self.staging_dir / "labelsTr"
        if not any(labels_dir.iterdir()):
            labels_dir.rmdir()
        write_json(self.staging_dir / "dataset.json", dataset_json)
        if self.target_dir.exists() and self.overwrite:
            shutil.rmtree(self.target_dir)
        self.staging_dir.rename(self.target_dir)
        return self.target_dir
