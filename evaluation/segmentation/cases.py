"""What the segmentation evaluation scores: the missing-sequence scenarios and the labelled cases (a fold's
validation cases or a folder in nnU-Net raw layout)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from codebrain_seg.errors import InputError, MissingFileError
from codebrain_seg.raw_dataset import FILE_ENDING, channel_names, image_path, list_cases, load_dataset_json
from evaluation.imputation.aggregate import all_patterns, pattern_string

ZERO_METHOD = "zero"
FULL = "full"
SCENARIO_SETS = ("3to1", "all")
# The CodeBrain paper's Table 4 column order; other channel sets keep the dataset order.
PAPER_ORDER = ("T1", "T2", "FLAIR", "T1Gd")


@dataclass(frozen=True)
class Scenario:
    """A missing pattern: which channels are given (``pattern`` bits in channel order) and its column label."""

    pattern: str
    label: str

    @property
    def available(self) -> list[bool]:
        """Availability flags in channel order."""
        return [bit == "1" for bit in self.pattern]

    @property
    def missing(self) -> list[int]:
        """Indices of the missing channels."""
        return [index for index, bit in enumerate(self.pattern) if bit == "0"]


@dataclass
class EvaluationCase:
    """One case to segment: its channel files (channel order) and its label map."""

    case_id: str
    images: list[Path]
    label: Path


def make_scenarios(names: Sequence[str], which: str = "3to1") -> list[Scenario]:
    """The scenarios of a channel list: ``3to1`` (one sequence missing) or ``all`` (every ``2^C - 2`` pattern)."""
    if which not in SCENARIO_SETS:
        raise InputError(f"unknown scenario set {which!r}; choose one of {', '.join(SCENARIO_SETS)}")
    count = len(names)
    if count < 2:
        raise InputError(f"scenarios need at least 2 sequences, got {list(names)}")
    if which == "3to1":
        order = [names.index(n) for n in PAPER_ORDER] if sorted(names) == sorted(PAPER_ORDER) else range(count)
        patterns = [pattern_string([i != missing for i in range(count)]) for missing in order]
    else:
        patterns = all_patterns(count)
    return [Scenario(p, "+".join(names[i] for i, bit in enumerate(p) if bit == "0")) for p in patterns]


def _short_hash(path: Path) -> str:
    return hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]


def validation_cases(raw_dir: Path, split: dict[str, list[str]]) -> list[EvaluationCase]:
    """The fold's validation cases that have a label map."""
    names = channel_names(load_dataset_json(raw_dir))
    cases = []
    for case_id in split["val"]:
        label = raw_dir / "labelsTr" / f"{case_id}{FILE_ENDING}"
        if label.is_file():
            cases.append(EvaluationCase(case_id, [image_path(raw_dir, case_id, c) for c in range(len(names))], label))
    return cases


def folder_cases(folder: Path, num_channels: int) -> list[EvaluationCase]:
    """Cases of a folder in nnU-Net raw layout: ``imagesTs/`` (or ``imagesTr/``) and ``labelsTs/`` (``labelsTr/``).

    Every case needs all channels and a label map; the error lists what is missing.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingFileError(f"cases folder {folder} does not exist")
    for images_name, labels_name in (("imagesTs", "labelsTs"), ("imagesTr", "labelsTr")):
        if (folder / images_name).is_dir():
            break
    else:
        raise MissingFileError(f"{folder} holds neither imagesTs/ nor imagesTr/ (nnU-Net raw layout: "
                                f"imagesTs/CASE_0000{FILE_ENDING} ..., labelsTs/CASE{FILE_ENDING})")
    problems, cases = [], []
    for case_id in list_cases(folder, images_name):
        images = [image_path(folder, case_id, c, images_name) for c in range(num_channels)]
        label = folder / labels_name / f"{case_id}{FILE_ENDING}"
        missing = [p.name for p in images if not p.is_file()]
        if not label.is_file():
            missing.append(f"{labels_name}/{label.name}")
        if missing:
            problems.append(f"{case_id}: missing {', '.join(missing)}")
        else:
            cases.append(EvaluationCase(case_id, images, label))
    if problems:
        raise MissingFileError(f"{folder}: segmentation evaluation needs every channel and a label map per case:\n  "
                                + "\n  ".join(problems))
    if not cases:
        raise MissingFileError(f"{folder}/{images_name} holds no case (CASE_0000{FILE_ENDING} files)")
    return cases


def _labelled_cases(raw_dir: Path) -> set[str]:
    folder = raw_dir / "labelsTr"
    if not folder.is_dir():
        return set()
    return {p.name[: -len(FILE_ENDING)] for p in folder.iterdir() if p.name.endswith(FILE_ENDING)}
