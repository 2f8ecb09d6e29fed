"""Checking source cases before a converter writes anything, and the check-then-write driver the converters share.

A conversion is all-or-nothing by default: every case is checked first (readable, same grid, finite, not blank,
known label values) and if any case is bad nothing is written and :class:`CaseProblemsError` lists *every* bad
case with each reason. With ``skip_bad`` the good cases are converted and the report lists the skipped ones.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
from tqdm import tqdm

from codebrain_seg.errors import ExistingFileError, InputError
from codebrain_seg.io import ImageReadError, Volume, read_nifti, read_side_by_side
from codebrain_seg.paths import dataset_folder_name, parse_dataset_folder_name, raw_root
from codebrain_seg.raw_dataset import FILE_ENDING, RawDatasetWriter, list_cases

logger = logging.getLogger(__name__)

# Affines may differ by float32 header rounding; 1e-3 mm is far below any real misregistration.
DEFAULT_AFFINE_ATOL_MM = 1e-3


@dataclass
class CaseFiles:
    """The files found for one source case; ``problems`` holds what discovery already found wrong."""

    case_id: str
    images: dict[str, Path]  # sequence name -> file, only the sequences that were found
    label: Path | None = None
    problems: list[str] = field(default_factory=list)  # e.g. "missing t1ce", "unexpected image file X"


class CaseProblemsError(InputError):
    """Raised when cases fail their checks; the message lists every bad case with each reason."""

    def __init__(self, problems: Mapping[str, Sequence[str]], total: int | None = None, hint: str = "") -> None:
        self.problems = {case: list(reasons) for case, reasons in problems.items()}
        count = f"{len(self.problems)} of {total}" if total is not None else str(len(self.problems))
        lines = [f"{count} case(s) failed the input checks:"]
        for case, reasons in sorted(self.problems.items()):
            lines.append(f"  {case}:")
            lines.extend(f"    - {reason}" for reason in reasons)
        if hint:
            lines.append(hint)
        super().__init__("\n".join(lines))


@dataclass
class ConversionReport:
    """What a conversion did: where the dataset went, which cases it holds and which were skipped and why."""

    dataset_dir: Path
    converted: list[str]
    labelled: list[str]
    skipped: dict[str, list[str]] = field(default_factory=dict)
    resumed: list[str] = field(default_factory=list)  # written by an interrupted earlier run, not rewritten
    warnings: list[str] = field(default_factory=list)
    layout: str = ""

    def summary(self, max_lines: int = 12) -> str:
        """A one-screen human-readable summary (long lists are cut with a count of the rest)."""
        unlabelled = len(self.converted) - len(self.labelled)
        lines = [f"Converted {len(self.converted)} case(s) ({len(self.labelled)} labelled, {unlabelled} without "
                 f"labels) -> {self.dataset_dir}"]
        if self.layout:
            lines.append(f"Source layout: {self.layout}")
        if self.resumed:
            lines.append(f"Resumed an interrupted run: {len(self.resumed)} case(s) were already written")
        if self.skipped:
            lines.append(f"Skipped {len(self.skipped)} bad case(s):")
            items = sorted(self.skipped.items())
            lines.extend(f"  {case}: {'; '.join(reasons)}" for case, reasons in items[:max_lines])
            if len(items) > max_lines:
                lines.append(f"  ... and {len(items) - max_lines} more")
        if self.warnings:
            lines.append("Warnings:")
            lines.extend(f"  {warning}" for warning in self.warnings[:max_lines])
            if len(self.warnings) > max_lines:
                lines.append(f"  ... and {len(self.warnings) - max_lines} more")
        return "\n".join(lines)


def _grid_offset_mm(affine: np.ndarray, reference: np.ndarray, shape: Sequence[int]) -> float:
    """Largest distance in mm between where the two affines put the volume's corner voxels."""
    corners = np.array([[*corner, 1.0] for corner in product(*[(0, max(n - 1, 0)) for n in shape[:3]])]).T
    return float(np.abs((affine - reference) @ corners)[:3].max())


def _count_nonfinite(name: str, data: np.ndarray) -> str | None:
    nans = int(np.isnan(data).sum())
    infs = int(np.isinf(data).sum())
    if nans or infs:
        return f"{name} has {nans} NaN and {infs} inf voxel(s)"
    return None


def _label_problems(name: str, data: np.ndarray, allowed: set[int]) -> list[str]:
    nonfinite = _count_nonfinite(name, data)
    if nonfinite:
        return [nonfinite]
    fractional = data != np.round(data)
    if fractional.any():
        return [f"{name} has {int(fractional.sum())} non-integer voxel(s) (e.g. {float(data[fractional][0]):g})"]
    integers = data.astype(np.int64)
    if integers.min() >= 0 and integers.max() < 1024:  # bincount is much faster than unique on big volumes
        present = {int(v) for v in np.flatnonzero(np.bincount(integers.ravel()))}
    else:
        present = {int(v) for v in np.unique(integers)}
    unknown = sorted(present - allowed)
    if unknown:
        return [f"{name} has unknown label value(s) {', '.join(map(str, unknown))} "
                f"(allowed: {', '.join(map(str, sorted(allowed)))})"]
    return []


def _read_or_error(path: Path) -> Volume | str:
    """The volume of ``path``, or the problem that kept it from being read."""
    if not path.is_file():
        return f"file not found: {path}"
    try:
        return read_nifti(path)
    except ImageReadError as error:
        return str(error)


def check_case(case_id: str, images: Mapping[str, Path], label: Path | None, allowed_labels: set[int] | None = None,
               affine_atol: float = DEFAULT_AFFINE_ATOL_MM, same_grid: bool = True,
               blank: list[str] | None = None, loaded: dict[str, Any] | None = None) -> list[str]:
    """Problems of one case (empty list = good): unreadable, grid mismatch, NaN/inf, all-zero, unknown labels.

    Args:
        case_id: name of the case, for logging.
        images: sequence name -> file; every file must be a readable 3D NIfTI with finite, not all-zero values.
        label: label map or None; checked for finite integer values within ``allowed_labels``.
        allowed_labels: label values allowed in ``label`` (required when a label is given).
        affine_atol: largest allowed distance in mm between where two files put any corner voxel.
        same_grid: require every image and the label to share the first image's shape and affine (False for
            sources that are registered during conversion, such as IXI).
        blank: when a list is given, an all-zero image is not a problem but its name is appended here (imputation
            input: an all-zero sequence is a missing one).
        loaded: when a dict is given, every image read is stored in it by sequence name (a
            :class:`codebrain_seg.io.Volume`), so a caller that reads the case next need not read it twice.

    Returns:
        One human-readable sentence per problem, naming the sequence and the measured discrepancy.
    """
    problems: list[str] = []
    reference: tuple[str, tuple[int, ...], np.ndarray] | None = None
    files = [(name, Path(path), False) for name, path in images.items()]
    if label is not None:
        files.append(("label", Path(label), True))
    read = read_side_by_side(_read_or_error, [path for _, path, _ in files])  # then checked in order
    for (name, path, is_label), volume in zip(files, read):
        if not isinstance(volume, Volume):
            problems.append(f"{name}: {volume}")
            continue
        if loaded is not None and not is_label:
            loaded[name] = volume
        shape, affine = tuple(volume.data.shape), volume.affine
        if same_grid and reference is None:
            reference = (name, shape, affine)
        elif same_grid and reference is not None:
            ref_name, ref_shape, ref_affine = reference
            if shape != ref_shape:
                problems.append(f"{name} has shape {shape} but {ref_name} has {ref_shape}")
            else:
                offset = _grid_offset_mm(affine, ref_affine, shape)
                if offset > affine_atol:
                    problems.append(f"{name} affine differs from {ref_name} by up to {offset:.4g} mm "
                                    f"(tolerance {affine_atol:g} mm)")
        if is_label:
            if allowed_labels is None:
                raise InputError("allowed_labels is required when a label is checked")
            problems.extend(_label_problems(name, volume.data, allowed_labels))
            continue
        nonfinite = _count_nonfinite(name, volume.data)
        if nonfinite:
            problems.append(nonfinite)
        elif not np.any(volume.data):
            if blank is None:
                problems.append(f"{name} is all zero")
            else:
                blank.append(name)
    if problems:
        logger.debug("case %s: %s", case_id, "; ".join(problems))
    return problems


def check_cases(cases: Sequence[CaseFiles], allowed_labels: set[int] | None = None,
                affine_atol: float = DEFAULT_AFFINE_ATOL_MM, same_grid: bool = True,
                progress: bool = True) -> dict[str, list[str]]:
    """Check every case (discovery problems first, then :func:`check_case`); bad case id -> reasons."""
    problems: dict[str, list[str]] = {}
    for case in tqdm(cases, desc="Checking cases", unit="case", disable=None if progress else True):
        reasons = list(case.problems) + check_case(case.case_id, case.images, case.label, allowed_labels,
                                                   affine_atol, same_grid)
        if reasons:
            problems[case.case_id] = reasons
    return problems


def select_good_cases(cases: Sequence[CaseFiles], problems: Mapping[str, Sequence[str]],
                      skip_bad: bool) -> list[CaseFiles]:
    """The cases without problems; raises CaseProblemsError unless ``skip_bad`` (or when none is good)."""
    if problems and not skip_bad:
        raise CaseProblemsError(problems, len(cases), "Nothing was written. Fix these cases, or pass --skip-bad "
                                                      "(skip_bad=True) to convert the others.")
    good = [case for case in cases if case.case_id not in problems]
    if not good:
        raise CaseProblemsError(problems, len(cases), "Nothing was written: no case passed the checks.")
    return good


def prepare_target(dataset_id: int, name: str, overwrite: bool = False) -> Path:
    """Output folder ``$codebrain_raw/DatasetXXX_Name``; fails early if it exists or the id is taken."""
    folder = dataset_folder_name(dataset_id, name)
    root = raw_root()
    target = root / folder
    if target.exists() and not overwrite:
        raise ExistingFileError(f"{target} already exists; remove it or pass --overwrite")
    if root.is_dir():
        # Two folders with one id would make "-d 137" ambiguous for every later command.
        for child in root.iterdir():
            parsed = parse_dataset_folder_name(child.name)
            if parsed and parsed[0] == int(dataset_id) and child.name != folder:
                raise ExistingFileError(f"dataset id {dataset_id} is already used by {child}; choose another -d")
    return target


def _drop_stale_staged_cases(writer: RawDatasetWriter, keep: set[str]) -> list[str]:
    """Remove cases an interrupted earlier run staged but this run does not convert (so counts stay right)."""
    stale = sorted(set(list_cases(writer.staging_dir)) - keep)
    for case_id in stale:
        for path in (writer.staging_dir / "imagesTr").glob(f"{case_id}_[0-9][0-9][0-9][0-9]{FILE_ENDING}"):
            path.unlink()
        (writer.staging_dir / "labelsTr" / f"{case_id}{FILE_ENDING}").unlink(missing_ok=True)
        (writer.staging_dir / ".done" / case_id).unlink(missing_ok=True)
    return stale


def convert_checked_cases(cases: Sequence[CaseFiles], target: Path,
                          write_case: Callable[[RawDatasetWriter, CaseFiles], None],
                          make_json: Callable[[list[CaseFiles]], dict], *, allowed_labels: set[int] | None = None,
                          same_grid: bool = True, skip_bad: bool = False, overwrite: bool = False,
                          warnings: Iterable[str] = (), layout: str = "") -> ConversionReport:
    """Check all cases, then write the good ones through a RawDatasetWriter (resumable) and finish the dataset.

    Args:
        cases: the discovered cases, in output order.
        target: final dataset folder (see :func:`prepare_target`).
        write_case: writes one case into the writer (converter specific).
        make_json: dataset.json content for the cases that were written.
        allowed_labels, same_grid: passed to :func:`check_case`.
        skip_bad: convert the good cases when some are bad instead of raising CaseProblemsError.
        overwrite: replace an existing dataset folder.
        warnings, layout: carried into the report.
    """
    problems = check_cases(cases, allowed_labels, same_grid=same_grid)
    good = select_good_cases(cases, problems, skip_bad)
    # The writer makes the staging folder, so it is created only once the checks passed.
    writer = RawDatasetWriter(target, overwrite=overwrite)
    report_warnings = list(warnings)
    stale = _drop_stale_staged_cases(writer, {case.case_id for case in good})
    if stale:
        report_warnings.append(f"removed {len(stale)} case(s) staged by an earlier run but not converted now")
    resumed = []
    for case in tqdm(good, desc="Writing cases", unit="case", disable=None):
        if writer.is_written(case.case_id):
            resumed.append(case.case_id)
            continue
        write_case(writer, case)
    dataset_dir = writer.finish(make_json(good))
    for warning in report_warnings:
        logger.info(warning)  # info, not warning: the report carries them and the CLI prints its summary
    return ConversionReport(dataset_dir=dataset_dir, converted=[c.case_id for c in good],
                            labelled=[c.case_id for c in good if c.label is not None],
                            skipped={case: list(reasons) for case, reasons in problems.items()},
                            resumed=resumed, warnings=report_warnings, layout=layout)
