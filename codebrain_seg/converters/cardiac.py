"""Short-axis cardiac cine MRI (ACDC, M&Ms / M&Ms-2) -> nnU-Net v2 raw dataset for missing-slice synthesis.

Source layout: one folder per subject, each detected on its own, so ACDC and M&Ms subjects can be pooled:

* ACDC:  ``patientXXX/patientXXX_frameYY.nii.gz`` (+ ``_gt``) and ``Info.cfg`` naming the ED and ES frames
  (``ED: 1``, ``ES: 12``, 1-based); ``patientXXX_4d.nii.gz`` (the whole cine) is ignored with a warning.
* M&Ms:  ``NNN/NNN_SA_ED.nii.gz``, ``NNN_SA_ES.nii.gz`` (+ ``_gt``); the long-axis files ``NNN_LA_*`` and the
  cine ``NNN_SA_CINE`` are ignored with a warning.

Output: one channel ``cine``; the ED and ES frames of a subject are two cases ``<subject>_ED`` / ``<subject>_ES``
(``<subject>`` = the folder name), and dataset.json's ``subject_pattern`` (a regex whose group 1 is the subject)
lets the splits keep both frames of a subject on the same side. ``"task": "missing_slices"`` marks the dataset
for the cardiac planner (``planners.cardiac_planner``).

Labels, one convention for every source (ACDC's): **0 background, 1 RV cavity, 2 LV myocardium, 3 LV cavity**.
M&Ms codes LV and RV the other way round (1 LV, 3 RV), so its labels 1 and 3 are swapped. Images are copied byte
for byte (``.nii`` is gzipped, not re-encoded): ACDC's int16 and float32 intensities stay as they are, since every
volume is normalised on its own by percentiles in preprocessing. Every case goes through the same checks as the
brain converters (:mod:`codebrain_seg.case_checks`): readable, image and label on one grid, finite, not blank,
known label values; a bad case stops the conversion (or is skipped with ``skip_bad``).
"""
from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from codebrain_seg.case_checks import CaseFiles, ConversionReport, convert_checked_cases, prepare_target
from codebrain_seg.converters.brats import as_nii_gz, remap_labels
from codebrain_seg.errors import InputError, MissingFileError
from codebrain_seg.io import read_nifti
from codebrain_seg.raw_dataset import RawDatasetWriter, make_dataset_json

CARDIAC_CHANNELS = ("cine",)
CARDIAC_LABELS = {"background": 0, "RV": 1, "MYO": 2, "LV": 3}
LABEL_CONVENTION = "0 background, 1 RV cavity, 2 LV myocardium, 3 LV cavity (ACDC's codes; M&Ms 1 <-> 3 swapped)"
MISSING_SLICES_TASK = "missing_slices"
PHASES = ("ED", "ES")
SUBJECT_PATTERN = r"^(.+)_(?:ED|ES)$"
DEFAULT_NAME = "Cardiac"

_NIFTI = re.compile(r"\.nii(\.gz)?$", re.IGNORECASE)
_ACDC_FILE = re.compile(r"^(?P<subject>.+)_frame(?P<frame>\d+)(?P<gt>_gt)?\.nii(\.gz)?$", re.IGNORECASE)
_ACDC_4D = re.compile(r"^.+_4d\.nii(\.gz)?$", re.IGNORECASE)
_MNMS_FILE = re.compile(r"^(?P<subject>.+)_SA_(?P<phase>ED|ES)(?P<gt>_gt)?\.nii(\.gz)?$", re.IGNORECASE)
_MNMS_OTHER = re.compile(r"^.+_(LA_.+|SA_CINE)\.nii(\.gz)?$", re.IGNORECASE)


@dataclass(frozen=True)
class CardiacSource:
    """One source dataset's layout: its name and its label codes -> the output convention."""

    key: str
    description: str
    label_map: dict[int, int]


ACDC = CardiacSource("acdc", "ACDC (patientXXX_frameYY[_gt] + Info.cfg)", {0: 0, 1: 1, 2: 2, 3: 3})
MNMS = CardiacSource("mnms", "M&Ms (NNN_SA_{ED,ES}[_gt]; labels 1 LV / 3 RV swapped to 3 LV / 1 RV)",
                     {0: 0, 1: 3, 2: 2, 3: 1})


@dataclass
class CardiacCase(CaseFiles):
    """A case with the source whose label codes it uses."""

    source: CardiacSource = ACDC


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _subject_folders(source: Path) -> list[Path]:
    if not source.exists():
        raise MissingFileError(f"cardiac source folder {source} does not exist")
    if not source.is_dir():
        raise InputError(f"cardiac source {source} is not a folder")
    folders = [p for p in _visible(source) if p.is_dir()]
    if not folders:
        hint = (" It holds NIfTI files: point at the folder that contains one folder per subject."
                if any(_NIFTI.search(p.name) for p in _visible(source)) else "")
        raise MissingFileError(f"no subject folders found in {source} (expected patientXXX/patientXXX_frameYY.nii.gz "
                               f"+ Info.cfg, or NNN/NNN_SA_ED.nii.gz).{hint}")
    return folders


def detect_source(folder: Path) -> CardiacSource | None:
    """ACDC, M&Ms, or None when the folder holds neither layout's files."""
    names = [p.name for p in _visible(folder)]
    if any(_MNMS_FILE.match(name) for name in names):
        return MNMS
    if "Info.cfg" in names or any(_ACDC_FILE.match(name) for name in names):
        return ACDC
    return None


def read_info_cfg(path: Path) -> dict[str, str]:
    """ACDC ``Info.cfg`` (``Key: value`` lines) as a dict; raises InputError on an unreadable line."""
    values = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise InputError(f"{path}: line {number} is not 'Key: value': {line!r}")
        values[key.strip()] = value.strip()
    return values


def _acdc_cases(folder: Path, warnings: list[str]) -> list[CardiacCase]:
    subject = folder.name
    cases = {phase: CardiacCase(f"{subject}_{phase}", {}, source=ACDC) for phase in PHASES}
    problems: list[str] = []
    frames: dict[str, int] = {}
    info = folder / "Info.cfg"
    if not info.is_file():
        problems.append("no Info.cfg (it names the ED and ES frames)")
    else:
        try:
            values = read_info_cfg(info)
            for phase in PHASES:
                if phase not in values:
                    problems.append(f"Info.cfg has no {phase} frame")
                else:
                    frames[phase] = int(values[phase])
        except (InputError, ValueError) as error:
            problems.append(f"Info.cfg: {error}")
    by_frame: dict[int, dict[str, Path]] = {}
    for path in _visible(folder):
        match = _ACDC_FILE.match(path.name)
        if match:
            kind = "label" if match.group("gt") else "image"
            by_frame.setdefault(int(match.group("frame")), {})[kind] = path
        elif _ACDC_4D.match(path.name):
            warnings.append(f"{subject}: ignored the 4D cine {path.name}")
        elif _NIFTI.search(path.name) or path.is_dir():
            problems.append(f"unexpected {'folder' if path.is_dir() else 'image file'} {path.name}")
        elif path.name != "Info.cfg":
            warnings.append(f"{subject}: ignored non-image file {path.name}")
    used = set(frames.values())
    for frame in sorted(set(by_frame) - used):
        if frames:  # frames that Info.cfg names neither ED nor ES: never guess what they are
            problems.append(f"frame {frame:02d} is neither the ED frame nor the ES frame of Info.cfg")
    for phase, frame in frames.items():
        files = by_frame.get(frame, {})
        if "image" not in files:
            cases[phase].problems.append(f"{phase} frame {frame:02d} of Info.cfg: no {subject}_frame{frame:02d}.nii.gz")
        else:
            cases[phase].images["cine"] = files["image"]
        cases[phase].label = files.get("label")
    for case in cases.values():
        case.problems[:0] = problems
        if not case.images and not case.problems:
            case.problems.append("no image file")
    return list(cases.values())


def _mnms_cases(folder: Path, warnings: list[str]) -> list[CardiacCase]:
    subject = folder.name
    cases = {phase: CardiacCase(f"{subject}_{phase}", {}, source=MNMS) for phase in PHASES}
    shared: list[str] = []
    for path in _visible(folder):
        match = _MNMS_FILE.match(path.name)
        if match:
            case = cases[match.group("phase").upper()]
            if match.group("gt"):
                if case.label is not None:
                    case.problems.append(f"two label files: {case.label.name} and {path.name}")
                case.label = path
            elif "cine" in case.images:
                case.problems.append(f"two image files: {case.images['cine'].name} and {path.name}")
            else:
                case.images["cine"] = path
        elif _MNMS_OTHER.match(path.name):
            warnings.append(f"{subject}: ignored {path.name} (only the short-axis ED / ES frames are used)")
        elif _NIFTI.search(path.name) or path.is_dir():
            shared.append(f"unexpected {'folder' if path.is_dir() else 'image file'} {path.name}")
        else:
            warnings.append(f"{subject}: ignored non-image file {path.name}")
    for phase, case in cases.items():
        case.problems[:0] = shared
        if "cine" not in case.images:
            case.problems.append(f"no {phase} image ({subject}_SA_{phase}.nii.gz)")
    return list(cases.values())


def discover_cardiac_cases(source: Path) -> tuple[list[CardiacCase], list[str], list[str]]:
    """Cases of every subject folder of ``source``, warnings, and the layouts found (descriptions)."""
    warnings: list[str] = []
    ignored_top = [p.name for p in _visible(source) if not p.is_dir()] if source.is_dir() else []
    cases: list[CardiacCase] = []
    layouts: list[str] = []
    for folder in _subject_folders(source):
        detected = detect_source(folder)
        if detected is None:
            if any(_NIFTI.search(p.name) for p in _visible(folder)):
                cases.append(CardiacCase(folder.name, {}, problems=[
                    "holds NIfTI files in neither the ACDC layout (patientXXX_frameYY.nii.gz + Info.cfg) nor the "
                    "M&Ms layout (NNN_SA_ED.nii.gz)"]))
            else:
                warnings.append(f"ignored folder {folder.name} (no NIfTI files)")
            continue
        if detected.description not in layouts:
            layouts.append(detected.description)
        cases.extend((_acdc_cases if detected is ACDC else _mnms_cases)(folder, warnings))
    if not layouts and not cases:
        raise InputError(f"no subject folder of {source} is in the ACDC or M&Ms layout")
    if ignored_top:
        warnings.insert(0, f"ignored {len(ignored_top)} file(s) beside the subject folders: "
                           f"{', '.join(ignored_top[:5])}" + (" ..." if len(ignored_top) > 5 else ""))
    return cases, warnings, layouts


def _write_case(writer: RawDatasetWriter, case: CaseFiles) -> None:
    source = case.source if isinstance(case, CardiacCase) else ACDC
    with tempfile.TemporaryDirectory(prefix="codebrain_cardiac_") as scratch:
        image = as_nii_gz(case.images["cine"], Path(scratch))
        label = None
        if case.label is not None:
            label = remap_labels(read_nifti(case.label).data, source.label_map)
        writer.write_case(case.case_id, [image], label=label, label_reference=read_nifti(image))


def convert_cardiac(source: Path, dataset_id: int, name: str | None = None, skip_bad: bool = False,
                    overwrite: bool = False) -> ConversionReport:
    """Convert ACDC and / or M&Ms subject folders into ``$codebrain_raw/DatasetXXX_Name`` (module docstring).

    Args:
        source: folder holding one folder per subject (ACDC and M&Ms subjects may be mixed).
        dataset_id: nnU-Net dataset id (1..999).
        name: short dataset name (default ``Cardiac``).
        skip_bad: convert the good cases when some fail the checks (default: write nothing and raise).
        overwrite: replace an existing dataset folder of the same name.

    Returns:
        A ConversionReport (converted, labelled, skipped with reasons, output folder).

    Raises:
        CaseProblemsError: some case failed the checks (all are listed) and ``skip_bad`` is False.
        MissingFileError / InputError: the source is missing, empty, or in no known layout.
        ExistingFileError: the output exists (without ``overwrite``) or the id is used by another dataset.
    """
    source = Path(source)
    cases, warnings, layouts = discover_cardiac_cases(source)
    name = name or DEFAULT_NAME
    target = prepare_target(dataset_id, name, overwrite)

    def make_json(good: list[CaseFiles]) -> dict:
        sources = sorted({case.source.key for case in good if isinstance(case, CardiacCase)})
        return make_dataset_json(
            CARDIAC_CHANNELS, len(good), labels=dict(CARDIAC_LABELS), name=name,
            description=f"Converted by codebrain_convert_cardiac from {'; '.join(layouts)}: short-axis cine, ED and "
                        f"ES frames as cases <subject>_ED / <subject>_ES; labels {LABEL_CONVENTION}.",
            task=MISSING_SLICES_TASK, subject_pattern=SUBJECT_PATTERN, label_convention=LABEL_CONVENTION,
            sources=sources)

    return convert_checked_cases(cases, target, _write_case, make_json, allowed_labels=set(ACDC.label_map),
                                 skip_bad=skip_bad, overwrite=overwrite, warnings=warnings, layout="; ".join(layouts))
