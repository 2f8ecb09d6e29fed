"""A procedural short-axis cardiac cine phantom: stacks with LV, myocardium and RV, for demos and tests.

Each stack ``(X, Y, K)`` (K thick slices, 1.5 x 1.5 x 10 mm by default) holds a body ellipse, the LV blood pool
(bright disc), the LV myocardium (a dark ring around it) and the RV blood pool (a bright crescent beside the
septum), all shrinking from the base (slice 0) to the apex (slice K - 1); the ES frame has smaller cavities and
a thicker myocardium than the ED frame. Labels in the converter's convention (``codebrain_seg.converters.cardiac``):
**1 RV cavity, 2 LV myocardium, 3 LV cavity**. Intensities are int16-like scanner units (0..~1000) with mild
noise; the affine is LPS (as ACDC's files), so the voxel order goes through the canonical mapping.

:func:`make_cardiac_dataset` writes a raw dataset as ``codebrain_convert_cardiac`` would: cases
``<subject>_ED`` / ``<subject>_ES``, ``task: missing_slices``, the subject rule for the splits.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from codebrain_seg import paths
from codebrain_seg.converters.cardiac import (
    CARDIAC_CHANNELS,
    CARDIAC_LABELS,
    LABEL_CONVENTION,
    MISSING_SLICES_TASK,
    SUBJECT_PATTERN,
)
from codebrain_seg.errors import InputError
from codebrain_seg.io import volume_from_array
from codebrain_seg.raw_dataset import RawDatasetWriter, make_dataset_json

PHANTOM_SPACING = (1.5, 1.5, 10.0)
PHASES = ("ED", "ES")


def cardiac_phantom(shape: Sequence[int] = (32, 32, 8), phase: str = "ED", seed: int = 0,
                    spacing: Sequence[float] = PHANTOM_SPACING) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One phantom stack: ``(image float32 (X, Y, K), label uint8 (X, Y, K), affine (4, 4))`` (module docstring)."""
    x_size, y_size, slices = (int(s) for s in shape)
    if min(x_size, y_size) < 16 or slices < 3:
        raise InputError(f"a cardiac phantom needs at least 16 x 16 pixels and 3 slices, got {tuple(shape)}")
    if phase not in PHASES:
        raise InputError(f"phase must be one of {PHASES}, got {phase!r}")
    rng = np.random.default_rng(seed)
    xs, ys = np.meshgrid(np.arange(x_size) + 0.5, np.arange(y_size) + 0.5, indexing="ij")
    scale = min(x_size, y_size) / 2.0
    centre = np.array([x_size / 2.0, y_size / 2.0]) + rng.uniform(-0.08, 0.08, 2) * scale
    lv_base = scale * rng.uniform(0.20, 0.26) * (1.0 if phase == "ED" else 0.75)
    wall = scale * rng.uniform(0.08, 0.11) * (1.0 if phase == "ED" else 1.3)
    blood, muscle = rng.uniform(700, 900), rng.uniform(150, 250)
    image = np.zeros((x_size, y_size, slices), np.float32)
    label = np.zeros((x_size, y_size, slices), np.uint8)
    body = ((xs - x_size / 2) / (0.47 * x_size)) ** 2 + ((ys - y_size / 2) / (0.42 * y_size)) ** 2 < 1
    for k in range(slices):
        depth = k / max(slices - 1, 1)  # 0 at the base, 1 at the apex
        lv_radius = lv_base * (1.0 - 0.6 * depth)
        distance = np.hypot(xs - centre[0], ys - centre[1])
        lv = distance < lv_radius
        myo = (distance >= lv_radius) & (distance < lv_radius + wall)
        rv_centre = centre + np.array([-1.0, 0.3]) * (lv_radius + wall) * 1.1
        rv_radius = (lv_radius + wall) * (1.0 - 0.5 * depth) * (1.0 if phase == "ED" else 0.8)
        rv = (np.hypot(xs - rv_centre[0], ys - rv_centre[1]) < rv_radius) & ~lv & ~myo \
            & (distance >= lv_radius + wall) & (depth < 0.85)
        slice_image = np.where(body, 300.0 + 40.0 * np.sin(xs / 3.0 + k), 0.0)
        slice_image = np.where(lv | rv, blood * (1.0 - 0.2 * depth), slice_image)
        slice_image = np.where(myo, muscle, slice_image)
        image[..., k] = slice_image + rng.normal(0.0, 15.0, slice_image.shape) * body
        label[..., k][rv] = CARDIAC_LABELS["RV"]
        label[..., k][myo] = CARDIAC_LABELS["MYO"]
        label[..., k][lv] = CARDIAC_LABELS["LV"]
    affine = np.diag([-float(spacing[0]), -float(spacing[1]), float(spacing[2]), 1.0])
    return np.clip(image, 0.0, None).astype(np.float32), label, affine


def make_cardiac_dataset(dataset_id: int, num_subjects: int = 4, shape: Sequence[int] = (32, 32, 8), seed: int = 0,
                         name: str = "CardiacPhantom", overwrite: bool = False) -> Path:
    """Write ``$codebrain_raw/DatasetXXX_<name>`` with an ED and an ES phantom per subject; returns the folder."""
    if num_subjects < 2:
        raise InputError(f"a cardiac phantom dataset needs at least 2 subjects (splits), got {num_subjects}")
    target = paths.raw_root() / paths.dataset_folder_name(int(dataset_id), name)
    writer = RawDatasetWriter(target, overwrite=overwrite)
    count = 0
    for subject in range(num_subjects):
        for offset, phase in enumerate(PHASES):
            case_id = f"phantom{subject:03d}_{phase}"
            image, label, affine = cardiac_phantom(shape, phase, seed + 2 * subject + offset)
            writer.write_case(case_id, [volume_from_array(image, affine)], label=label,
                              label_reference=volume_from_array(image, affine))
            count += 1
    dataset_json = make_dataset_json(
        CARDIAC_CHANNELS, count, labels=dict(CARDIAC_LABELS), name=name,
        description="procedural short-axis cine phantom (codebrain_seg.cardiac_phantom)", task=MISSING_SLICES_TASK,
        subject_pattern=SUBJECT_PATTERN, label_convention=LABEL_CONVENTION, sources=["phantom"])
    return writer.finish(dataset_json)
