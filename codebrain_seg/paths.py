"""Where datasets live on disk and how a ``-d`` argument names one (nnU-Net conventions)."""
from __future__ import annotations

import os
import re
from pathlib import Path

from codebrain_seg.errors import EnvironmentSetupError, InputError, UnknownNameError

# Each project folder is read from its own variable first and from nnU-Net's as a fallback, so that an
# existing nnU-Net setup works without new variables.
FOLDER_VARIABLES = {
    "raw": ("codebrain_raw", "nnUNet_raw"),
    "preprocessed": ("codebrain_preprocessed", "nnUNet_preprocessed"),
    "results": ("codebrain_results", "nnUNet_results"),
}

_FULL_NAME = re.compile(r"^Dataset(\d{3})_(.+)$")


class DatasetNotFoundError(UnknownNameError):
    """Raised when a ``-d`` argument names no dataset in the searched folders."""


def _folder(kind: str) -> Path:
    own, fallback = FOLDER_VARIABLES[kind]
    for variable in (own, fallback):
        value = os.environ.get(variable)
        if value:
            return Path(value)
    raise EnvironmentSetupError(
        f"The {kind} folder is not set: export {own}=/path/to/{kind} "
        f"(or nnU-Net's {fallback}, which is used when {own} is unset)."
    )


def raw_root() -> Path:
    """Folder holding raw datasets (``$codebrain_raw``, else ``$nnUNet_raw``)."""
    return _folder("raw")


def preprocessed_root() -> Path:
    """Folder holding preprocessed datasets (``$codebrain_preprocessed``, else ``$nnUNet_preprocessed``)."""
    return _folder("preprocessed")


def results_root() -> Path:
    """Folder holding trained models and evaluations (``$codebrain_results``, else ``$nnUNet_results``)."""
    return _folder("results")


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """``DatasetXXX_Name`` for an id and a short name."""
    if not 0 < int(dataset_id) < 1000:
        raise InputError(f"Dataset id must lie in 1..999, got {dataset_id}")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9\-]*", name):
        raise InputError(f"Dataset name {name!r} may hold only letters, digits and '-' (no '_' or spaces)")
    return f"Dataset{int(dataset_id):03d}_{name}"


def parse_dataset_folder_name(folder_name: str) -> tuple[int, str] | None:
    """(id, short name) of a ``DatasetXXX_Name`` folder name, or None if it is not one."""
    match = _FULL_NAME.match(folder_name)
    return (int(match.group(1)), match.group(2)) if match else None


def _known_datasets(roots: list[Path]) -> dict[str, int]:
    found: dict[str, int] = {}
    for root in roots:
        if root.is_dir():
            for child in root.iterdir():
                parsed = parse_dataset_folder_name(child.name)
                if child.is_dir() and parsed:
                    found[child.name] = parsed[0]
    return found


def resolve_dataset(dataset: str | int, roots: list[Path] | None = None) -> str:
    """Full ``DatasetXXX_Name`` for an id (``137``), a full name or a short name (``BraTS2023``).

    Searches the raw and preprocessed folders that are set (or ``roots`` when given).
    """
    if roots is None:
        roots = []
        for kind in ("raw", "preprocessed"):
            try:
                roots.append(_folder(kind))
            except EnvironmentError:
                pass
        if not roots:
            _folder("raw")  # raises the error that names both variables
    known = _known_datasets(roots)
    text = str(dataset).strip()
    if text.isdigit():
        matches = sorted(name for name, number in known.items() if number == int(text))
    elif parse_dataset_folder_name(text):
        matches = [text] if text in known else []
    else:
        matches = sorted(name for name in known if parse_dataset_folder_name(name)[1] == text)
    if len(matches) == 1:
        return matches[0]
    searched = ", ".join(str(r) for r in roots)
    if not matches:
        listing = ", ".join(sorted(known)) or "none"
        raise DatasetNotFoundError(f"No dataset matches -d {text!r} in {searched}. Known datasets: {listing}")
    raise DatasetNotFoundError(f"-d {text!r} is ambiguous in {searched}: {', '.join(matches)}")


def raw_dataset_dir(dataset: str | int) -> Path:
    """Raw folder of a dataset given by id or name; it must exist."""
    path = raw_root() / resolve_dataset(dataset, [raw_root()])
    return path


def preprocessed_dataset_dir(dataset: str | int) -> Path:
    """Preprocessed folder of a dataset given by id or name (resolved against raw and preprocessed folders)."""
    return preprocessed_root() / resolve_dataset(dataset)


def results_dataset_dir(dataset: str | int) -> Path:
    """Results folder of a dataset given by id or name."""
    return results_root() / resolve_dataset(dataset)
