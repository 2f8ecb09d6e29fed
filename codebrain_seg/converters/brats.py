"""BraTS (2018-2021 and 2023+ naming) -> nnU-Net v2 raw dataset with channels T1, T1Gd, T2, FLAIR.

Source layout, one folder per case, detected from the file names:

* 2018-2021: ``CASE/CASE_{t1,t1ce,t2,flair,seg}.nii.gz``; labels 1 NCR, 2 ED, 4 ET (4 becomes 3 in the output).
* 2023+:     ``CASE/CASE-{t1n,t1c,t2w,t2f,seg}.nii.gz``; labels 1 NCR, 2 ED, 3 ET (kept).

``.nii`` is accepted as well as ``.nii.gz``. Cases without a seg file are converted without a label (they stay in
``imagesTr`` for imputation; see :mod:`codebrain_seg.raw_dataset`). Images are copied byte for byte (``.nii`` is
gzipped, not re-encoded); labels are remapped and written as uint8 on the T1 image's geometry.

Default dataset name: ``BraTS<year>`` when the source folder (or its parent) is named with a year, as the official
downloads are (``...BraTS2023...``, ``MICCAI_BraTS_2018_...``); otherwise the last year of the detected naming:
``BraTS2021`` for the 2018-2021 names and ``BraTS2023`` for the 2023+ names.
"""
from __future__ import annotations

import gzip
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from codebrain_seg.case_checks import (  # noqa: F401 (re-export)
    CaseFiles,
    ConversionReport,
    convert_checked_cases,
    prepare_target,
)
from codebrain_seg.errors import InputError, MissingFileError
from codebrain_seg.io import Volume, read_nifti
from codebrain_seg.raw_dataset import (
    BRATS_CHANNELS,
    BRATS_REGIONS,
    BRATS_REGIONS_CLASS_ORDER,
    FILE_ENDING,
    RawDatasetWriter,
    make_dataset_json,
)

_NIFTI = re.compile(r"\.nii(\.gz)?$", re.IGNORECASE)


@dataclass(frozen=True)
class BratsNaming:
    """One BraTS file-naming convention: source sequence names in output channel order, and its labels."""

    key: str
    description: str
    sequences: tuple[str, str, str, str]  # source names for T1, T1Gd, T2, FLAIR
    label_map: dict[int, int]  # source label -> output label (0 bg, 1 NCR, 2 ED, 3 ET)
    default_name: str

    def pattern(self) -> re.Pattern[str]:
        """Regex matching this convention's file names (group ``seq`` is the sequence or ``seg``)."""
        names = "|".join(sorted((*self.sequences, "seg"), key=len, reverse=True))
        return re.compile(rf"^.+[_-](?P<seq>{names})\.nii(\.gz)?$", re.IGNORECASE)


NAMING_2018 = BratsNaming("2018", "BraTS 2018-2021 (CASE_{t1,t1ce,t2,flair,seg}; ET label 4 -> 3)",
                          ("t1", "t1ce", "t2", "flair"), {0: 0, 1: 1, 2: 2, 4: 3}, "BraTS2021")
NAMING_2023 = BratsNaming("2023", "BraTS 2023+ (CASE-{t1n,t1c,t2w,t2f,seg}; ET label 3)",
                          ("t1n", "t1c", "t2w", "t2f"), {0: 0, 1: 1, 2: 2, 3: 3}, "BraTS2023")
NAMINGS = (NAMING_2018, NAMING_2023)


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _case_folders(source: Path) -> list[Path]:
    if not source.exists():
        raise MissingFileError(f"BraTS source folder {source} does not exist")
    if not source.is_dir():
        raise NotADirectoryError(f"BraTS source {source} is not a folder")
    entries = _visible(source)
    if not entries:
        raise MissingFileError(f"BraTS source folder {source} is empty")
    folders = [p for p in entries if p.is_dir()]
    if not folders:
        hint = (" It holds NIfTI files: point at the folder that contains one folder per case."
                if any(_NIFTI.search(p.name) for p in entries) else "")
        raise MissingFileError(f"No case folders found in {source} (expected CASE/CASE_t1.nii.gz ...).{hint}")
    return folders


def detect_naming(source: Path) -> BratsNaming:
    """The naming convention used by the case folders of ``source``; raises ValueError if unknown or mixed."""
    users: dict[str, list[str]] = {naming.key: [] for naming in NAMINGS}
    for folder in _case_folders(source):
        names = [p.name for p in folder.iterdir()]
        for naming in NAMINGS:
            pattern = naming.pattern()
            # "seg" is shared by both conventions, so only the sequence names tell them apart.
            if any((m := pattern.match(n)) and m.group("seq").lower() != "seg" for n in names):
                users[naming.key].append(folder.name)
    used = [naming for naming in NAMINGS if users[naming.key]]
    if not used:
        example = next((p.name for f in _case_folders(source) for p in _visible(f)), "nothing")
        raise InputError(f"Unknown layout in {source}: no case folder holds BraTS files named CASE_t1.nii.gz ... "
                         f"(2018-2021) or CASE-t1n.nii.gz ... (2023+); first file found: {example}")
    if len(used) > 1:
        detail = "; ".join(f"{len(users[n.key])} folder(s) use {n.description}, e.g. {users[n.key][0]}"
                           for n in used)
        raise InputError(f"Mixed BraTS naming conventions in {source}: {detail}. Convert them separately.")
    return used[0]


def discover_cases(source: Path, naming: BratsNaming) -> tuple[list[CaseFiles], list[str]]:
    """Cases of ``source`` (one per folder) with their discovery problems, and warnings about ignored files."""
    pattern = naming.pattern()
    warnings: list[str] = []
    ignored_top = [p.name for p in _visible(source) if not p.is_dir()]
    if ignored_top:
        warnings.append(f"ignored {len(ignored_top)} file(s) beside the case folders: {', '.join(ignored_top[:5])}"
                        + (" ..." if len(ignored_top) > 5 else ""))
    cases = []
    for folder in _case_folders(source):
        case = CaseFiles(case_id=folder.name, images={})
        for path in _visible(folder):
            match = pattern.match(path.name)
            if match is None:
                if _NIFTI.search(path.name) or path.is_dir():
                    # An unknown image may be a misnamed sequence or segmentation: never guess, never drop it.
                    case.problems.append(f"unexpected {'folder' if path.is_dir() else 'image file'} {path.name} "
                                         f"(expected {', '.join(naming.sequences)}, seg)")
                else:
                    warnings.append(f"{folder.name}: ignored non-image file {path.name}")
                continue
            sequence = match.group("seq").lower()
            if sequence == "seg":
                if case.label is not None:
                    case.problems.append(f"two seg files: {case.label.name} and {path.name}")
                case.label = path
            elif sequence in case.images:
                case.problems.append(f"two {sequence} files: {case.images[sequence].name} and {path.name}")
            else:
                case.images[sequence] = path
        case.problems[:0] = [f"missing {s}" for s in naming.sequences if s not in case.images]
        # Output channel order, whatever order the folder listing gave.
        case.images = {s: case.images[s] for s in naming.sequences if s in case.images}
        cases.append(case)
    return cases, warnings


def default_dataset_name(source: Path, naming: BratsNaming) -> str:
    """``BraTS<year>`` from the source folder's (or its parent's) name, else the naming's default."""
    for part in (source.resolve().name, source.resolve().parent.name):
        match = re.search(r"brats[ _-]?(20\d\d)", part, re.IGNORECASE)
        if match:
            return f"BraTS{match.group(1)}"
    return naming.default_name


def _geometry(path: Path) -> Volume:
    """Affine and header of a NIfTI file without reading its voxels (labels are written on this geometry)."""
    image = nib.load(str(path))
    return Volume(data=np.empty((0, 0, 0), dtype=np.float32), affine=np.asarray(image.affine, dtype=np.float64),
                  header=image.header.copy())


def remap_labels(label: np.ndarray, label_map: dict[int, int]) -> np.ndarray:
    """Source label values -> output values (uint8); raises ValueError naming values not in ``label_map``."""
    values = np.rint(label).astype(np.int64)
    unmapped = 255  # never a valid output label, so it marks source values the map does not know
    lookup = np.full(max(label_map) + 2, unmapped, dtype=np.uint8)
    for source_value, output_value in label_map.items():
        lookup[source_value] = output_value
    output = lookup[np.clip(values, -1, len(lookup) - 1)]  # out-of-range values land on an unmapped entry
    if (output == unmapped).any():
        unknown = sorted(set(np.unique(values[output == unmapped]).tolist()))
        raise InputError(f"unknown label value(s) {unknown}; expected {sorted(label_map)}")
    return output


def as_nii_gz(path: Path, scratch: Path) -> Path:
    """``path`` itself if it is ``.nii.gz``; otherwise a gzipped byte-for-byte copy in ``scratch``."""
    if path.name.lower().endswith(FILE_ENDING):
        return path
    target = scratch / f"{path.name}.gz"
    with open(path, "rb") as source, gzip.open(target, "wb", compresslevel=6) as sink:
        shutil.copyfileobj(source, sink)
    return target


def _writer_for(naming: BratsNaming):
    def write(writer: RawDatasetWriter, case: CaseFiles) -> None:
        with tempfile.TemporaryDirectory(prefix="codebrain_brats_") as scratch:
            images = [as_nii_gz(case.images[s], Path(scratch)) for s in naming.sequences]
            label = None
            if case.label is not None:
                label = remap_labels(read_nifti(case.label).data, naming.label_map)
            writer.write_case(case.case_id, images, label=label, label_reference=_geometry(images[0]))
    return write


def convert_brats(source: Path, dataset_id: int, name: str | None = None, skip_bad: bool = False,
                  overwrite: bool = False) -> ConversionReport:
    """Convert a BraTS folder (2018-2021 or 2023+ naming, auto-detected) into ``$codebrain_raw/DatasetXXX_Name``.

    Args:
        source: folder holding one folder per case.
        dataset_id: nnU-Net dataset id (1..999).
        name: short dataset name; default ``BraTS<year>`` (see the module docstring).
        skip_bad: convert the good cases when some fail the checks (default: write nothing and raise).
        overwrite: replace an existing dataset folder of the same name.

    Returns:
        A ConversionReport (converted, labelled, skipped with reasons, output folder).

    Raises:
        CaseProblemsError: some case failed the checks (all are listed) and ``skip_bad`` is False.
        FileNotFoundError / ValueError: the source is missing, empty, or in no known layout.
        FileExistsError: the output exists (without ``overwrite``) or the id is used by another dataset.
    """
    source = Path(source)
    naming = detect_naming(source)
    name = name or default_dataset_name(source, naming)
    target = prepare_target(dataset_id, name, overwrite)
    cases, warnings = discover_cases(source, naming)

    def make_json(good: list[CaseFiles]) -> dict:
        return make_dataset_json(BRATS_CHANNELS, len(good), labels=BRATS_REGIONS,
                                 regions_class_order=BRATS_REGIONS_CLASS_ORDER, name=name,
                                 description=f"Converted by codebrain_convert_brats from {naming.description}; "
                                             f"cases without a labelsTr file have no segmentation.")

    return convert_checked_cases(cases, target, _writer_for(naming), make_json, allowed_labels=set(naming.label_map),
                                 skip_bad=skip_bad, overwrite=overwrite, warnings=warnings,
                                 layout=naming.description)
