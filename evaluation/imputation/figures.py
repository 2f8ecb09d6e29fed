"""PNG figures of the imputation evaluation: example slices per pattern, code maps, PSNR per pattern."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from codebrain_seg.errors import InputError
from codebrain_seg.figure_style import styled
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


@styled
def pattern_figure(path: str | Path, channel_names: Sequence[str], pattern: str, target: np.ndarray,
                   predictions: dict[str, np.ndarray], title: str = "") -> None:
    """Example slice of one pattern.

    First row: the given sequences. Then one row per missing sequence: its ground truth, then per method the
    imputation and its absolute error map (so a figure has no empty panel rows, whatever the pattern).

    Args:
        path: PNG file to write.
        channel_names: the C sequence names.
        pattern: availability bits, e.g. ``"0111"``.
        target: ``(C, H, W)`` ground-truth slice in [0, 1].
        predictions: method -> ``(C, H, W)`` imputed slice in [0, 1] (only missing channels are shown).
        title: figure title.
    """
    flags = parse_pattern(pattern)
    given = [c for c, flag in enumerate(flags) if flag]
    missing = [c for c, flag in enumerate(flags) if not flag]
    columns = max(len(given), 1 + 2 * len(predictions))
    rows = 1 + len(missing)
    figure, axes = plt.subplots(rows, columns, figsize=(1.8 * columns, 1.9 * rows), squeeze=False)
    for column in range(columns):
        channel = given[column] if column < len(given) else None
        _show(axes[0, column], None if channel is None else target[channel],
              "" if channel is None else f"input {channel_names[channel]}")
    for row, channel in enumerate(missing, start=1):
        name = channel_names[channel]
        _show(axes[row, 0], target[channel], f"ground truth {name}")
        for index, (method, prediction) in enumerate(predictions.items()):
            _show(axes[row, 1 + 2 * index], prediction[channel], f"{method}: {name}")
            _show(axes[row, 2 + 2 * index], np.abs(prediction[channel] - target[channel]), f"|error| {method}",
                  cmap="magma", vmax=ERROR_RANGE)
        for column in range(1 + 2 * len(predictions), columns):
            _show(axes[row, column], None)
    figure.suptitle(title or describe_pattern(pattern, channel_names), fontsize=10)
    _save(figure, path)


def _code_panels(quantizer: str, classes: int | None) -> tuple[str, Callable, Callable, str]:
    """How one code channel is drawn: colour map, value -> [0, 1], |difference| -> [0, 1], label."""
    if quantizer == "continuous":
        # Continuous codes in [-1, 1]: a diverging continuous map, 0 (white) in the middle.
        return "coolwarm", (lambda v: (np.asarray(v, float) + 1.0) / 2.0), \
            (lambda a, b: np.abs(np.asarray(a, float) - b) / 2.0), "code value"
    top = max(int(classes or 2) - 1, 1)
    if quantizer == "vq":
        # Codebook indices have no order: many distinct colours, and only equal / different is meaningful.
        return "nipy_spectral", (lambda v: np.asarray(v, float) / top), \
            (lambda a, b: (np.asarray(a) != np.asarray(b)).astype(float)), f"index, K={classes}"
    return ("tab10" if top < 10 else "viridis"), (lambda v: np.asarray(v, float) / top), \
        (lambda a, b: np.abs(np.asarray(a, float) - b) / top), f"L={classes}"


@styled
def code_map_figure(path: str | Path, image: np.ndarray, predicted: np.ndarray, oracle: np.ndarray | None,
                    confidence: np.ndarray | None, class_counts: Sequence[int], title: str = "", *,
                    quantizer: str = "fsq", groups: dict[str, Sequence[int]] | None = None,
                    shown_groups: Sequence[str] | None = None) -> None:
    """CodeBrain's code maps of one slice: predicted (Stage II) and oracle (Stage I posterior) codes per channel.

    The drawing follows the quantiser (the model's ``network_config``): FSQ levels on their level grid (a
    categorical map over ``L`` levels), VQ codebook indices (many distinct colours; the difference row marks cells
    whose index differs, as indices have no order), continuous codes in [-1, 1] (a continuous diverging map; the
    difference row is ``|predicted - oracle| / 2``).

    Args:
        path: PNG file to write.
        image: ``(H, W)`` a slice shown for orientation (e.g. the first given sequence).
        predicted: ``(n, h, w)`` Stage-II targets decoded from Stage II (FSQ levels, VQ indices or codes).
        oracle: the same of the posterior encoder on the complete stack, or None.
        confidence: ``(h, w)`` per-cell confidence in [0, 1], or None (only the grading head gives one).
        class_counts: classes per target channel (FSQ ``L_i``, VQ ``K`` per code, continuous ``()``).
        title: figure title.
        quantizer: ``'fsq'``, ``'vq'`` or ``'continuous'``.
        groups: name -> target channels of each code (v1: one group per sequence); default one group of all.
        shown_groups: the groups to draw (default all), e.g. the missing sequences of a v1 model.
    """
    if quantizer not in ("fsq", "vq", "continuous"):
        raise InputError(f"quantizer must be fsq, vq or continuous, got {quantizer!r}")
    predicted = np.asarray(predicted)
    groups = dict(groups) if groups else {"codes": list(range(predicted.shape[0]))}
    names = [name for name in (shown_groups if shown_groups is not None else groups) if name in groups]
    if not names:
        raise InputError(f"no code group to show among {list(groups)}")
    counts = list(class_counts) if quantizer != "continuous" else [None] * predicted.shape[0]
    if len(counts) != predicted.shape[0]:
        raise InputError(f"{len(counts)} class counts for {predicted.shape[0]} code channels")
    rows_per_group = 3 if oracle is not None else 1
    columns = 1 + max(len(groups[name]) for name in names)
    rows = max(rows_per_group * len(names), 3)
    figure, axes = plt.subplots(rows, columns, figsize=(1.7 * columns, 1.8 * rows), squeeze=False)
    for axis in axes.flat:
        _show(axis, None)
    _show(axes[0, 0], image, "input slice")
    _show(axes[1, 0], confidence, "confidence" if confidence is not None else "no confidence (not grading)",
          cmap="viridis")
    shown = [channel for name in names for channel in groups[name]]
    if oracle is not None:
        if quantizer == "continuous":
            agreement = np.abs(predicted[shown] - oracle[shown]).mean(axis=0) / 2.0
            label = "mean |pred - oracle| / 2"
        else:
            agreement = (predicted[shown] == oracle[shown]).mean(axis=0)
            label = "fraction of channels = oracle"
        _show(axes[2, 0], agreement, label, cmap="viridis")
    for index, name in enumerate(names):
        prefix = f"{name} " if len(groups) > 1 else ""
        row = index * rows_per_group
        for column, channel in enumerate(groups[name], start=1):
            cmap, scale, difference, label = _code_panels(quantizer, counts[channel])
            local = channel - groups[name][0]
            # Titles name the group and the value range once per row, in its first panel.
            first, suffix = (prefix, f" ({label})") if column == 1 else ("", "")
            _show(axes[row, column], scale(predicted[channel]), f"{first}predicted c{local}{suffix}", cmap=cmap)
            if oracle is not None:
                _show(axes[row + 1, column], scale(oracle[channel]), f"{first}oracle c{local}", cmap=cmap)
                _show(axes[row + 2, column], difference(predicted[channel], oracle[channel]),
                      f"{first}{'differs' if quantizer == 'vq' else '|diff|'} c{local}", cmap="magma")
    figure.suptitle(title, fontsize=10)
    _save(figure, path)


@styled
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
