"""PNG figures of the imputation evaluation: example slices per pattern, code maps, PSNR per pattern."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from codebrain_seg.io import atomic_path  # noqa: E402
from evaluation.imputation.aggregate import describe_pattern, parse_pattern  # noqa: E402

ERROR_RANGE = 0.5  # |error| colour scale upper end, in normalised intensities


def _save(figure: plt.Figure, path: str | Path) -> None:
    with atomic_path(path) as temp:
        figure.savefig(temp, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)


def _show(axis: plt.Axes, image: np.ndarray | None, title: str = "", cmap: str = "gray", vmax: float = 1.0) -> None:
    axis.set_xticks([])
    axis.set_yticks([])
    for spine in axis.spines.values():
        spine.set_visible(False)
    if image is not None:
        # Slices are (H, W) with H, W the first and second in-plane RAS axes: show anterior up.
        axis.imshow(np.asarray(image).T, cmap=cmap, vmin=0.0, vmax=vmax, origin="lower", interpolation="nearest")
    if title:
        axis.set_title(title, fontsize=8)


def pattern_figure(path: str | Path, channel_names: Sequence[str], pattern: str, target: np.ndarray,
                   predictions: dict[str, np.ndarray], title: str = "") -> None:
    """Example slice of one pattern.

    Rows: the inputs (missing sequences blank), the ground truth, then per method the imputed missing
    sequences and their absolute error maps. Columns: the sequences.

    Args:
        path: PNG file to write.
        channel_names: the C sequence names.
        pattern: availability bits, e.g. ``"0111"``.
        target: ``(C, H, W)`` ground-truth slice in [0, 1].
        predictions: method -> ``(C, H, W)`` imputed slice in [0, 1] (only missing channels are shown).
        title: figure title.
    """
    flags = parse_pattern(pattern)
    rows = 2 + 2 * len(predictions)
    columns = len(channel_names)
    figure, axes = plt.subplots(rows, columns, figsize=(1.8 * columns, 1.8 * rows), squeeze=False)
    for column, name in enumerate(channel_names):
        _show(axes[0, column], target[column] if flags[column] else None,
              f"input {name}" if flags[column] else f"{name} missing")
        _show(axes[1, column], target[column], f"ground truth {name}")
        for index, (method, prediction) in enumerate(predictions.items()):
            missing = not flags[column]
            _show(axes[2 + 2 * index, column], prediction[column] if missing else None,
                  f"{method}: {name}" if missing else "")
            error = np.abs(prediction[column] - target[column]) if missing else None
            _show(axes[3 + 2 * index, column], error, f"|error| {method}" if missing else "", cmap="magma",
                  vmax=ERROR_RANGE)
    figure.suptitle(title or describe_pattern(pattern, channel_names), fontsize=10)
    _save(figure, path)


def code_map_figure(path: str | Path, image: np.ndarray, predicted: np.ndarray, oracle: np.ndarray | None,
                    confidence: np.ndarray, fsq_levels: Sequence[int], title: str = "") -> None:
    """CodeBrain's code maps of one slice: predicted (Stage II) and oracle (Stage I posterior) levels per channel.

    Args:
        path: PNG file to write.
        image: ``(H, W)`` a slice shown for orientation (e.g. the first given sequence).
        predicted: ``(d, h, w)`` integer levels decoded from Stage II.
        oracle: ``(d, h, w)`` levels of the posterior encoder on the complete stack, or None.
        confidence: ``(h, w)`` per-cell confidence in [0, 1].
        fsq_levels: ``L_i`` per code channel (colour range).
        title: figure title.
    """
    channels = predicted.shape[0]
    rows = 3 if oracle is not None else 2
    figure, axes = plt.subplots(rows, channels + 1, figsize=(1.7 * (channels + 1), 1.8 * rows), squeeze=False)
    _show(axes[0, 0], image, "input slice")
    _show(axes[1, 0], confidence, "confidence", cmap="viridis")
    if oracle is not None:
        agreement = (predicted == oracle).mean(axis=0)
        _show(axes[2, 0], agreement, "fraction of channels = oracle", cmap="viridis")
    for channel in range(channels):
        top = fsq_levels[channel] - 1
        _show(axes[0, channel + 1], predicted[channel] / top, f"predicted c{channel} (L={fsq_levels[channel]})",
              cmap="tab10" if top < 10 else "viridis")
        if oracle is not None:
            _show(axes[1, channel + 1], oracle[channel] / top, f"oracle c{channel}", cmap="tab10")
            _show(axes[2, channel + 1], np.abs(predicted[channel] - oracle[channel]) / top, f"|diff| c{channel}",
                  cmap="magma")
        else:
            _show(axes[1, channel + 1], None)
    figure.suptitle(title, fontsize=10)
    _save(figure, path)


def metric_per_pattern_figure(path: str | Path, summaries: dict[str, dict[str, Any]], channel_names: Sequence[str],
                              metric: str = "psnr", title: str = "") -> None:
    """Grouped bars: one group per pattern, one bar per method, plus the overall mean."""
    methods = list(summaries)
    patterns: list[str] = []
    for summary in summaries.values():
        patterns += [p for p in summary["patterns"] if p not in patterns]
    groups = patterns + ["overall"]
    width = 0.8 / max(len(methods), 1)
    figure, axis = plt.subplots(figsize=(max(6.0, 0.6 * len(groups) * max(len(methods), 1)), 3.5))
    for index, method in enumerate(methods):
        values = [summaries[method]["patterns"].get(p, {}).get(metric, np.nan) for p in patterns]
        values.append(summaries[method]["overall"][metric])
        axis.bar(np.arange(len(groups)) + index * width, values, width, label=method)
    axis.set_xticks(np.arange(len(groups)) + 0.4 - width / 2)
    axis.set_xticklabels([describe_pattern(p, channel_names) if p != "overall" else p for p in groups],
                         rotation=60, ha="right", fontsize=7)
    axis.set_ylabel({"psnr": "PSNR (dB)", "ssim": "SSIM x100", "mae": "MAE x1000"}.get(metric, metric))
    axis.legend(fontsize=8)
    axis.set_title(title, fontsize=10)
    _save(figure, path)
