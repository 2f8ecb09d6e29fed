"""What a training run writes besides checkpoints: the text log, the JSON-lines metrics and the progress plot."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

from codebrain_seg.figure_style import styled
from codebrain_seg.io import atomic_path

METRICS_FILE = "metrics.jsonl"
LOG_FILE = "training_log.txt"


def attach_log_file(output_dir: Path, is_main: bool) -> logging.Handler | None:
    """Append this package's log lines to ``output_dir/training_log.txt`` (rank 0 only)."""
    if not is_main:
        return None
    output_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(output_dir / LOG_FILE)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    package = logging.getLogger("trainers")
    package.addHandler(handler)
    if package.getEffectiveLevel() > logging.INFO:
        package.setLevel(logging.INFO)
    return handler


def detach_log_file(handler: logging.Handler | None) -> None:
    """Stop writing the log file."""
    if handler is not None:
        logging.getLogger("trainers").removeHandler(handler)
        handler.close()


def read_metrics(output_dir: Path) -> list[dict[str, Any]]:
    """Records of ``metrics.jsonl`` (a torn last line from a killed run is skipped)."""
    path = Path(output_dir) / METRICS_FILE
    records = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def truncate_metrics(output_dir: Path, iteration: int, is_main: bool) -> list[dict[str, Any]]:
    """Keep only records up to ``iteration`` (a resumed run rewrites what came after its checkpoint)."""
    kept = [r for r in read_metrics(output_dir) if r.get("iteration", 0) <= iteration] if iteration else []
    if is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(output_dir / METRICS_FILE) as temp:
            temp.write_text("".join(json.dumps(r) + "\n" for r in kept))
    return kept


def append_metrics(output_dir: Path, record: dict[str, Any]) -> None:
    """Append one JSON line and flush it to disk."""
    with open(output_dir / METRICS_FILE, "a") as handle:
        handle.write(json.dumps(record) + "\n")


def format_metrics(values: dict[str, Any]) -> str:
    """``name value`` pairs of the scalar entries, for log lines."""
    return ", ".join(f"{k} {v:.4g}" for k, v in values.items() if isinstance(v, (int, float)) and k != "score")


@styled
def plot_progress(output_dir: Path, history: list[dict[str, Any]], stage: int) -> None:
    """``progress.png``: one panel per training loss and one of validation PSNR / SSIM, against the iteration."""
    train = [r for r in history if r["kind"] == "train"]
    val = [r for r in history if r["kind"] == "val"]
    names = sorted({k for r in train for k in r["losses"]})
    columns = 2
    rows = (len(names) + 1 + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(11, 3 * rows), squeeze=False)
    panels = list(axes.flat)
    for axis, name in zip(panels, names):
        # Losses live on very different scales (PSNR loss ~ -500, LSGAN ~ 0.1): one panel each.
        points = [(r["iteration"], r["losses"][name]) for r in train if name in r["losses"]]
        axis.plot(*zip(*points), linewidth=1)
        axis.set_title(name, fontsize=9)
    axis = panels[len(names)]
    axis.set_title(f"stage {stage} validation", fontsize=9)
    if val:
        iterations = [r["iteration"] for r in val]
        axis.plot(iterations, [r["psnr"] for r in val], "o-", color="tab:blue")
        axis.set_ylabel("PSNR (dB)", color="tab:blue")
        twin = axis.twinx()
        twin.plot(iterations, [r["ssim"] for r in val], "s--", color="tab:orange")
        twin.set_ylabel("SSIM", color="tab:orange")
    for axis in panels[len(names) + 1:]:
        axis.axis("off")
    for axis in panels:
        axis.set_xlabel("iteration", fontsize=8)
    figure.tight_layout()
    with atomic_path(output_dir / "progress.png") as temp:
        figure.savefig(temp, dpi=72)
    plt.close(figure)
