"""Dataset fingerprint: what the planner needs to know about the raw cases, measured once and saved as JSON.

Everything geometric is measured in the closest canonical (RAS) voxel order, the order preprocessing works in.

Per case: shape, spacing, orientation, the brain bounding box (voxels non-zero in any sequence) and per-sequence
intensity percentiles inside the brain. Per dataset: medians and extremes of those.
"""
from __future__ import annotations

import logging
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from tqdm import tqdm

from codebrain_seg.errors import InputError, MissingFileError
from codebrain_seg.geometry import canonical_spacing, to_canonical
from codebrain_seg.io import read_nifti
from codebrain_seg.raw_dataset import channel_names, image_path, label_path, list_cases

logger = logging.getLogger(__name__)

PERCENTILES = (0.5, 1.0, 50.0, 99.0, 99.5)


def brain_mask(channels: list[np.ndarray]) -> np.ndarray:
    """Voxels non-zero in any sequence: the brain of skull-stripped data (nnU-Net's non-zero mask)."""
    mask = np.zeros(channels[0].shape, dtype=bool)
    for data in channels:
        mask |= data != 0
    return mask


def bounding_box(mask: np.ndarray) -> list[list[int]]:
    """Half-open [start, stop) per axis of the True voxels; raises if the mask is empty."""
    if not mask.any():
        raise InputError("empty brain mask: every sequence is zero everywhere")
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        present = np.flatnonzero(mask.any(axis=other))
        box.append([int(present[0]), int(present[-1]) + 1])
    return box


def fingerprint_case(raw_dir: Path, case_id: str, num_channels: int, label_box: bool = False) -> dict[str, Any]:
    """Fingerprint of one case (see module docstring); ``label_box`` adds ``label_bbox`` (labels > 0) or None."""
    volumes = [read_nifti(image_path(raw_dir, case_id, c)) for c in range(num_channels)]
    data = [to_canonical(v.data, v.affine) for v in volumes]
    mask = brain_mask(data)
    if not mask.any():
        raise InputError(f"case {case_id}: every sequence is zero everywhere (no brain voxels)")
    intensities = []
    for index, channel in enumerate(data):
        inside = channel[mask]
        if not np.isfinite(inside).all():
            raise InputError(f"case {case_id}: {image_path(raw_dir, case_id, index).name} has "
                             f"{int((~np.isfinite(inside)).sum())} NaN or infinite voxel(s); fix or remove the case "
                             f"and rerun (nothing was planned)")
        values = np.percentile(inside, PERCENTILES)
        intensities.append({
            "percentiles": {str(p): float(v) for p, v in zip(PERCENTILES, values)},
            "mean": float(inside.mean()), "std": float(inside.std()),
            "min": float(inside.min()), "max": float(inside.max()),
        })
    extra: dict[str, Any] = {}
    if label_box:
        # the cardiac planner crops around the heart: the box of the labelled structures, None without a label
        label_file = label_path(raw_dir, case_id)
        extra["label_bbox"] = None
        if label_file.is_file():
            label = read_nifti(label_file)
            labelled = to_canonical(label.data, label.affine) > 0
            extra["label_bbox"] = bounding_box(labelled) if labelled.any() else None
    return {
        **extra,
        "case_id": case_id,
        "shape": list(data[0].shape),
        "spacing": canonical_spacing(volumes[0].spacing, volumes[0].affine),
        "orientation": "".join(nib.aff2axcodes(volumes[0].affine)),
        "affine": volumes[0].affine.tolist(),
        "brain_bbox": bounding_box(mask),
        "brain_voxels": int(mask.sum()),
        "has_label": label_path(raw_dir, case_id).is_file(),
        "intensities": intensities,
    }


def input_stamps(raw_dir: Path, case_ids: list[str], num_channels: int) -> dict[str, list[int]]:
    """``{file name: [size, mtime_ns]}`` of every raw image and label: a changed file changes its stamp."""
    stamps: dict[str, list[int]] = {}
    for case_id in case_ids:
        files = [image_path(raw_dir, case_id, c) for c in range(num_channels)] + [label_path(raw_dir, case_id)]
        for path in files:
            if path.is_file():
                stat = path.stat()
                stamps[f"{path.parent.name}/{path.name}"] = [stat.st_size, stat.st_mtime_ns]
    return stamps


def changed_inputs(fingerprint: dict[str, Any], stamps: dict[str, list[int]]) -> list[str]:
    """Raw files added, removed or changed since ``fingerprint`` was made (all of them when it has no stamps)."""
    recorded = fingerprint.get("input_stamps")
    if not isinstance(recorded, dict):
        return sorted(stamps) or ["(no input stamps)"]
    return sorted(name for name in set(recorded) | set(stamps) if recorded.get(name) != stamps.get(name))


def extract_fingerprint(raw_dir: Path, dataset_json: dict[str, Any], num_processes: int = 1) -> dict[str, Any]:
    """Fingerprint of every training case plus dataset-level summaries."""
    cases = list_cases(raw_dir)
    if not cases:
        raise MissingFileError(f"{raw_dir / 'imagesTr'} holds no cases (expected CASE_0000.nii.gz files)")
    names = channel_names(dataset_json)
    task = dataset_json.get("task")
    jobs = [(raw_dir, case, len(names), task == "missing_slices") for case in cases]
    if num_processes > 1:
        with ProcessPoolExecutor(num_processes) as pool:
            futures = [pool.submit(fingerprint_case, *job) for job in jobs]
            per_case = [f.result() for f in tqdm(futures, desc="fingerprint", unit="case")]
    else:
        per_case = [fingerprint_case(*job) for job in tqdm(jobs, desc="fingerprint", unit="case")]
    extents = np.array([[stop - start for start, stop in case["brain_bbox"]] for case in per_case])
    typical = {}
    for index, name in enumerate(names):
        uppers = [case["intensities"][index]["percentiles"]["99.5"] for case in per_case]
        typical[name] = {"median_p99_5": float(np.median(uppers)),
                         "median_p50": float(np.median([c["intensities"][index]["percentiles"]["50.0"]
                                                        for c in per_case]))}
    return {
        **({"task": task} if task else {}),
        "channel_names": names,
        "num_cases": len(per_case),
        "median_shape": np.median([c["shape"] for c in per_case], axis=0).tolist(),
        "median_spacing": np.median([c["spacing"] for c in per_case], axis=0).tolist(),
        "orientations": sorted({c["orientation"] for c in per_case}),
        "max_brain_extent": extents.max(axis=0).tolist(),
        "median_brain_extent": np.median(extents, axis=0).tolist(),
        "intensity_summary": typical,
        "cases": per_case,
    }
