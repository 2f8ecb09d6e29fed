"""evaluation/imputation/figures.py: the code-map and per-pattern figures from synthetic arrays."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from evaluation.imputation import figures


def test_code_map_figure_draws_each_quantizer(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    image = rng.random((16, 16))
    cases = {"fsq": (rng.integers(0, 5, (4, 2, 2)), [5] * 4, None),
             "vq": (rng.integers(0, 32, (2, 2, 2)), [32, 32], {"T1": [0], "T2": [1]}),
             "continuous": (rng.uniform(-1, 1, (6, 2, 2)), [], {"T1": [0, 1, 2], "T2": [3, 4, 5]})}
    for quantizer, (codes, counts, groups) in cases.items():
        path = tmp_path / f"{quantizer}.png"
        figures.code_map_figure(path, image, codes, codes[::-1].copy(), None, counts, quantizer=quantizer,
                                groups=groups, shown_groups=["T2"] if groups else None)
        assert path.stat().st_size > 1000
    with pytest.raises(ValueError, match="class counts"):
        figures.code_map_figure(tmp_path / "bad.png", image, cases["fsq"][0], None, None, [5, 5])


def test_pattern_figure_has_one_row_per_missing_sequence(tmp_path):
    import matplotlib.image

    from evaluation.imputation.figures import pattern_figure

    rng = np.random.default_rng(0)
    target = rng.uniform(0, 1, (4, 32, 32)).astype(np.float32)
    methods = {name: np.clip(target + rng.normal(0, s, target.shape), 0, 1) for name, s in
               (("codebrain", 0.05), ("mean", 0.2), ("zero", 0.0))}
    shapes = {}
    for pattern in ("0111", "1000"):
        pattern_figure(tmp_path / f"{pattern}.png", ["T1", "T1Gd", "T2", "FLAIR"], pattern, target, methods)
        shapes[pattern] = matplotlib.image.imread(tmp_path / f"{pattern}.png").shape
    # 7 panel columns (ground truth + 3 methods x (imputation, error)); 2 rows for one missing, 4 for three
    assert shapes["0111"][1] == shapes["1000"][1] and shapes["0111"][1] > 2.5 * shapes["0111"][0]
    assert 1.6 < shapes["1000"][0] / shapes["0111"][0] < 2.4
