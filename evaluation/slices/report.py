"""Tables of the missing-slice evaluation: per missing length and method, the image quality of the filled slices
and, with a segmenter, the LV / RV / MYO Dice (Markdown, CSV, JSON; one CSV row per case and run as well)."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from codebrain_seg.io import atomic_path, write_json

IMAGE_METRICS = ("psnr_2d", "ssim_2d", "psnr_3d", "ssim_3d")
STRUCTURES = ("LV", "RV", "MYO")
DICE_METRICS = tuple(f"dice_{s}" for s in STRUCTURES) + ("dice_mean",) + tuple(
    f"dice_{s}_volume" for s in STRUCTURES) + ("dice_volume_mean",)
COMPLETE = "complete"
ROW_FIELDS = ("case", "method", "length", "start", "run", "slices", *IMAGE_METRICS, *DICE_METRICS, "skipped")
HEADERS = {"psnr_2d": "PSNR 2D (dB)", "ssim_2d": "SSIM 2D", "psnr_3d": "PSNR 3D (dB)", "ssim_3d": "SSIM 3D",
           "dice_LV": "Dice LV", "dice_RV": "Dice RV", "dice_MYO": "Dice MYO", "dice_mean": "Dice mean",
           "dice_volume_mean": "Dice mean (whole stack)"}


def _finite(values: Sequence[Any]) -> list[float]:
    return [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(float(v))]


def build_table(rows: Sequence[Mapping[str, Any]], methods: Sequence[str], lengths: Sequence[int],
                meta: Mapping[str, Any]) -> dict[str, Any]:
    """``{"meta", "groups": [{"length", "method", "n", "skipped", <metric>: {"mean", "std", "n"}}]}``."""
    with_dice = any(isinstance(r.get("dice_mean"), (int, float)) for r in rows)
    order = list(methods) + ([COMPLETE] if with_dice else [])
    groups = []
    for length in lengths:
        for method in order:
            members = [r for r in rows if r["length"] == length and r["method"] == method]
            if not members:
                continue
            scored = [r for r in members if not r.get("skipped")]
            group: dict[str, Any] = {"length": int(length), "method": method, "n": len(scored),
                                     "skipped": len(members) - len(scored)}
            for metric in IMAGE_METRICS + DICE_METRICS:
                values = _finite([r.get(metric) for r in scored])
                if values:
                    group[metric] = {"mean": float(np.mean(values)), "std": float(np.std(values)), "n": len(values)}
            groups.append(group)
    return {"meta": dict(meta), "with_dice": with_dice, "groups": groups}


def _cell(group: Mapping[str, Any], metric: str) -> str:
    value = group.get(metric)
    if not isinstance(value, Mapping):
        return "-"
    digits = 2 if metric.startswith("psnr") else 3
    return f"{value['mean']:.{digits}f} ± {value['std']:.{digits}f}"


def markdown(table: Mapping[str, Any]) -> str:
    """The Markdown table (one row per missing length and method)."""
    meta = table["meta"]
    metrics = list(IMAGE_METRICS) + (["dice_LV", "dice_RV", "dice_MYO", "dice_mean", "dice_volume_mean"]
                                     if table["with_dice"] else [])
    lines = [f"# Missing-slice synthesis: {meta.get('dataset')} fold {meta.get('fold')}", "",
             f"{meta.get('cases_count')} held-out case(s) ({', '.join(meta.get('cases', []))}); runs of "
             f"{', '.join(str(n) for n in meta.get('lengths', []))} consecutive missing slices, up to "
             f"{meta.get('runs_per_case')} interior run(s) per case and length; configuration "
             f"{meta.get('configuration')}.", "",
             "Image quality over the filled slices inside the model's field of view, both stacks mapped to [0, 1] "
             "by the true stack's 0.5-99.5 percentiles; 2D = per slice, 3D = over the filled slices together. "
             "Mean ± std over the runs. FID / FVD are left out (their Inception / I3D weights are not available "
             "offline).", ""]
    if table["with_dice"]:
        lines += [f"Dice of the segmenter {meta.get('segmenter')} on the filled slices (whole stack: last column); "
                  f"`complete` = the true stack; `zero` = the slices left missing (all zero).", ""]
    lines.append("| missing slices | method | runs | " + " | ".join(HEADERS[m] for m in metrics) + " |")
    lines.append("|---|---|---|" + "---|" * len(metrics))
    for group in table["groups"]:
        runs = f"{group['n']}" + (f" ({group['skipped']} skipped)" if group["skipped"] else "")
        lines.append(f"| {group['length']} | {group['method']} | {runs} | "
                     + " | ".join(_cell(group, m) for m in metrics) + " |")
    skipped = meta.get("skipped_reasons") or {}
    if skipped:
        lines += ["", "Skipped runs: " + "; ".join(f"{k}: {v}" for k, v in sorted(skipped.items()))]
    return "\n".join(lines) + "\n"


def _csv(rows: Sequence[Mapping[str, Any]], fields: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in fields})
    return buffer.getvalue()


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as temp:
        temp.write_text(text)


def write_reports(folder: Path, rows: Sequence[Mapping[str, Any]], table: Mapping[str, Any]) -> list[Path]:
    """``per_scenario.csv``, ``table.csv``, ``table.md``, ``table.json`` in ``folder`` (atomically)."""
    folder.mkdir(parents=True, exist_ok=True)
    flat = []
    for group in table["groups"]:
        entry: dict[str, Any] = {"length": group["length"], "method": group["method"], "runs": group["n"],
                                 "skipped": group["skipped"]}
        for metric in IMAGE_METRICS + DICE_METRICS:
            value = group.get(metric)
            entry[f"{metric}_mean"] = value["mean"] if isinstance(value, Mapping) else None
            entry[f"{metric}_std"] = value["std"] if isinstance(value, Mapping) else None
        flat.append(entry)
    summary_fields = ["length", "method", "runs", "skipped"] + [f"{m}_{s}" for m in IMAGE_METRICS + DICE_METRICS
                                                                for s in ("mean", "std")]
    files = {"per_scenario.csv": _csv(rows, ROW_FIELDS), "table.csv": _csv(flat, summary_fields),
             "table.md": markdown(table)}
    written = []
    for name, text in files.items():
        _write_text(folder / name, text)
        written.append(folder / name)
    write_json(folder / "table.json", {**table, "rows": list(rows)})
    written.append(folder / "table.json")
    return written
