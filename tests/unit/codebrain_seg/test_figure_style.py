"""Figures keep their layout when another library changed matplotlib's global style in the same process.

nnU-Net's progress plot (``nnunetv2.training.logging.nnunet_logger``) calls ``seaborn.set(font_scale=2.5)``; the
segmentation evaluation draws its Dice chart in the process that has just trained the segmenter.
"""
from __future__ import annotations

import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import pytest
import seaborn

from codebrain_seg.figure_style import house_style
from evaluation.segmentation import report


@pytest.fixture
def restore_rcparams():
    saved = dict(plt.rcParams)
    yield
    plt.rcParams.update(saved)


def _table() -> dict:
    columns = ["T1", "T2", "FLAIR", "T1Gd", "mean"]
    regions = ["mean of regions", "WT", "TC", "ET"]
    dice = {row: {region: {column: 0.1 * (i + 1) + 0.01 * j for j, column in enumerate(columns)} for region in regions}
            for i, row in enumerate(["zero-fill", "codebrain", "full"])}
    return {"columns": columns, "rows": ["zero-fill", "codebrain", "full"], "dice": dice, "dataset": "Dataset990_Demo",
            "fold": 0}


def test_the_dice_chart_is_identical_after_seaborn_changed_the_global_style(tmp_path, restore_rcparams):
    report.bar_chart(_table(), tmp_path / "before.png")
    seaborn.set(font_scale=2.5)  # what nnU-Net's logger does while the segmenter trains
    assert plt.rcParams["font.size"] > 20  # the global style did change
    report.bar_chart(_table(), tmp_path / "after.png")
    before, after = matplotlib.image.imread(tmp_path / "before.png"), matplotlib.image.imread(tmp_path / "after.png")
    assert before.shape == after.shape
    assert np.array_equal(before, after)
    assert plt.rcParams["font.size"] > 20  # the caller's style is back afterwards


def test_without_the_house_style_the_same_figure_changes(tmp_path, restore_rcparams):
    """The check above can fail: the same figure drawn under the changed global style has other text sizes."""
    def title_size() -> float:
        figure, axis = plt.subplots()
        size = axis.set_title("Dice").get_fontsize()
        plt.close(figure)
        return size

    with house_style():
        styled = title_size()
    seaborn.set(font_scale=2.5)
    assert title_size() > 2 * styled
    with house_style():
        assert title_size() == styled
