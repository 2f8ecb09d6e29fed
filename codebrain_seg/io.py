"""File I/O shared by every stage: NIfTI with its geometry, JSON, NumPy arrays; all writes atomic."""
from __future__ import annotations

import json
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import nibabel as nib
import numpy as np

from codebrain_seg.errors import InputError


class ImageReadError(InputError):
    """Raised when an image file cannot be read as NIfTI."""


@dataclass
class Volume:
    """A 3D image with the geometry needed to write results back on its grid."""

    data: np.ndarray  # (X, Y, Z) in the file's voxel order
    affine: np.ndarray  # (4, 4) voxel -> world (RAS+, nibabel convention)
    header: nib.Nifti1Header

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size in mm along the three array axes."""
        return tuple(float(s) for s in self.header.get_zooms()[:3])


def volume_from_array(data: np.ndarray, affine: np.ndarray) -> Volume:
    """A Volume with a fresh header consistent with ``data`` and ``affine`` (zooms from the affine)."""
    image = nib.Nifti1Image(np.asarray(data), np.asarray(affine, dtype=np.float64))
    return Volume(data=np.asarray(data), affine=np.asarray(affine, dtype=np.float64), header=image.header.copy())


def read_nifti(path: str | Path, dtype: Any = np.float32) -> Volume:
    """Read a 3D NIfTI file; raises ImageReadError naming the file when it is unreadable or not 3D."""
    path = Path(path)
    try:
        image = nib.load(str(path))
        data = np.asarray(image.dataobj, dtype=dtype)
    except Exception as error:  # nibabel raises many types for corrupt files
        raise ImageReadError(f"{path}: unreadable NIfTI ({type(error).__name__}: {error})") from error
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ImageReadError(f"{path}: expected a 3D image, got shape {data.shape}")
    return Volume(data=data, affine=np.asarray(image.affine, dtype=np.float64), header=image.header.copy())


def read_side_by_side(read: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    """``[read(item) for item in items]`` in threads, one per core at most: reading compressed NIfTI files is
    mostly gzip decompression, which releases the GIL (about 0.3 s per BraTS volume here)."""
    with ThreadPoolExecutor(max_workers=max(1, min(len(items), os.cpu_count() or 1))) as pool:
        return list(pool.map(read, items))


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; it replaces ``target`` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Keep the full suffix (e.g. '.nii.gz') so writers that look at the extension behave.
    suffix = "".join(target.suffixes)
    handle, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{suffix}", dir=target.parent)
    os.close(handle)
    temp = Path(temp_name)
    try:
        yield temp
        # mkstemp makes private (0600) files; give the result the permissions a plain open() would.
        os.chmod(temp, 0o666 & ~_current_umask())
        os.replace(temp, target)
    finally:
        if temp.exists():
            temp.unlink()


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_nifti(path: str | Path, data: np.ndarray, affine: np.ndarray, header: nib.Nifti1Header | None = None,
                dtype: Any | None = None) -> None:
    """Write a 3D array as NIfTI atomically, keeping the reference header's geometry when given."""
    array = np.asarray(data if dtype is None else data.astype(dtype))
    if header is not None:
        header = header.copy()
        header.set_data_dtype(array.dtype)
        # Scaling from the source would rescale our values on read; we store them as they are.
        header.set_slope_inter(None, None)
    image = nib.Nifti1Image(array, affine, header=header)
    if header is None:
        image.set_qform(affine, code=1)
        image.set_sform(affine, code=1)
    with atomic_path(path) as temp:
        nib.save(image, str(temp))


def write_json(path: str | Path, payload: Any) -> None:
    """Write JSON atomically with stable, human-readable formatting."""
    with atomic_path(path) as temp:
        temp.write_text(json.dumps(payload, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_json(path: str | Path) -> Any:
    """Read a JSON file, naming the file in the error if it is malformed."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: malformed JSON ({error})") from error


def write_npy(path: str | Path, array: np.ndarray) -> None:
    """Write a NumPy array atomically (``.npy``, memory-mappable on read)."""
    with atomic_path(path) as temp:
        with open(temp, "wb") as handle:
            np.save(handle, np.ascontiguousarray(array))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise InputError(f"Not JSON serialisable: {type(value).__name__}")
