"""evaluation/imputation/aggregate.py: missing patterns and the paper's aggregation against the released IXI table."""
from __future__ import annotations

import numpy as np
import pytest

from evaluation.imputation.aggregate import (
    all_patterns,
    describe_pattern,
    markdown_table,
    pair_means,
    parse_pattern,
    pattern_string,
    summarise,
    summarise_pairs,
)

# The CodeBrain reference implementation's released IXI Stage II PSNR per (pattern, missing) pair,
# channels (T1, T2, PD).
IXI_PAIRS = [("001", "T1", 28.72), ("001", "T2", 30.36), ("010", "T1", 28.20), ("010", "PD", 33.57),
             ("100", "T2", 23.83), ("100", "PD", 27.26), ("011", "T1", 29.09), ("110", "PD", 34.74),
             ("101", "T2", 31.33)]


def test_patterns():
    assert all_patterns(3) == ["100", "010", "001", "110", "101", "011"]
    assert len(all_patterns(4)) == 14 and all_patterns(4)[:4] == ["1000", "0100", "0010", "0001"]
    assert pattern_string([False, True, True]) == "011" and parse_pattern("011") == [False, True, True]
    assert describe_pattern("011", ["T1", "T2", "PD"]) == "T2+PD -> T1"
    with pytest.raises(ValueError):
        parse_pattern("012")


def test_aggregation_reproduces_released_ixi_table():
    pairs = [{"pattern": p, "missing": m, "psnr": v, "ssim": 0.0, "mae": 0.0} for p, m, v in IXI_PAIRS]
    summary = summarise_pairs(pairs)
    assert round(summary["overall"]["psnr"], 2) == 29.68
    assert round(summary["O->O"]["psnr"], 2) == 28.66
    assert round(summary["M->O"]["psnr"], 2) == 31.72
    # pattern means as printed in the table (29.54 / 30.89 / 25.54, halves rounded either way)
    assert summary["patterns"]["001"]["psnr"] == pytest.approx(29.54)
    assert summary["patterns"]["010"]["psnr"] == pytest.approx(30.885)
    assert summary["patterns"]["100"]["psnr"] == pytest.approx(25.545)
    assert summary["variance"]["psnr"] == pytest.approx(np.var([v for *_, v in IXI_PAIRS]))
    assert summary["num_pairs"] == 9


def test_pair_means_pool_slices_over_cases_then_pairs_are_unweighted():
    rows = []
    # pair A: 3 slices in case x, 1 in case y -> mean over the 4 slices; pair B: 1 slice.
    for case, value in [("x", 10.0), ("x", 20.0), ("x", 30.0), ("y", 40.0)]:
        rows.append({"method": "m", "protocol": "paper", "region": "image", "case": case, "pattern": "01",
                     "missing": "A", "psnr": value, "ssim": 1.0, "mae": 2.0})
    rows.append({"method": "m", "protocol": "paper", "region": "image", "case": "x", "pattern": "10",
                 "missing": "B", "psnr": 5.0, "ssim": 1.0, "mae": 2.0})
    pairs = {p["missing"]: p for p in pair_means(rows)}
    assert pairs["A"]["psnr"] == 25.0 and pairs["A"]["count"] == 4 and pairs["A"]["cases"] == 2
    summary = summarise(rows)["paper"]["image"]["m"]
    assert summary["overall"]["psnr"] == 15.0  # (25 + 5) / 2, not weighted by slice count
    table = markdown_table({"m": summary}, ["A", "B"], title="t")
    assert "| **overall** | | 15.00 / 1.00 / 2.00 |" in table


def test_summarise_rejects_duplicate_pairs():
    pair = {"pattern": "01", "missing": "A", "psnr": 1.0, "ssim": 1.0, "mae": 1.0}
    with pytest.raises(ValueError, match="twice"):
        summarise_pairs([pair, dict(pair)])
