"""trainers/data_loading.py: missing patterns, anchor/source draws and the augmentation (no data folders)."""
from __future__ import annotations

from collections import Counter

import numpy as np

from trainers.data_loading import (
    build_augmentation,
    draw_anchor_and_source,
    draw_missing_pattern,
    missing_patterns,
    single_missing_patterns,
)


def test_anchor_and_source_are_uniform_over_ordered_pairs() -> None:
    counts = Counter(draw_anchor_and_source(1337, 0, it, draw_missing_pattern(1337, 0, it, 4)) for it in range(6000))
    assert set(counts) == {(a, s) for a in range(4) for s in range(4) if a != s}
    assert max(counts.values()) / min(counts.values()) < 1.35  # 12 pairs, 500 expected each


def test_augmentation_warps_all_channels_alike_and_keeps_non_square_crops() -> None:
    crop = (40, 48)  # non-square: only half turns are allowed
    rng = np.random.default_rng(0)
    image = np.zeros(crop, np.float32)
    image[8:30, 10:40] = rng.uniform(0.2, 1.0, size=(22, 30))
    batch = np.repeat(np.repeat(image[None, None], 4, axis=1), 16, axis=0)
    np.random.seed(3)
    output = build_augmentation(crop)(data=batch.copy())["data"]
    assert output.shape == batch.shape and output.dtype == np.float32
    assert np.allclose(output, output[:, :1])  # same warp for every channel of a slice
    assert sum(not np.allclose(o, b) for o, b in zip(output, batch)) >= 8  # most slices are changed


def test_missing_patterns() -> None:
    patterns = missing_patterns(4)
    assert len(patterns) == 14 == len(set(patterns))
    assert all(any(p) and not all(p) for p in patterns)
    assert single_missing_patterns(3) == [(False, True, True), (True, False, True), (True, True, False)]
    draws = [draw_missing_pattern(1, 0, iteration, 4) for iteration in range(700)]
    assert draws == [draw_missing_pattern(1, 0, iteration, 4) for iteration in range(700)]
    assert set(draws) == set(patterns)
    assert draws != [draw_missing_pattern(1, 1, iteration, 4) for iteration in range(700)]
