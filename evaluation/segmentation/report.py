"""Tables and figure of the segmentation evaluation, shaped like the CodeBrain paper's Table 4.

Rows: zero-fill, each imputation method, full (all real sequences); columns: the missing sequence of each
scenario and their mean. A cell is the mean over the evaluation cases; "mean of regions" averages WT, TC and ET
per case first. The full row does not depend on the scenario: like the paper, it is given in the mean column only.
Dice is a fraction in ``table.json`` / ``table.csv`` / ``per_case.csv`` and a percentage in ``table.md`` and the
figure; HD95 is in mm.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")  # figures are written to files; no display is needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np

from codebrain_seg.figure_style import styled
from codebrain_seg.io import atomic_path, write_json
from evaluation.segmentation.metrics import EMPTY_HD95_PENALTY_MM, REGION_NAMES

MEAN = "mean"
REGION_AVERAGE = "mean of regions"
METRICS = ("dice", "hd95")
DISPLAY_NAMES = {"zero": "zero-fill", "full": "full"}
CONVENTIONS = {
    "regions": "WT = labels {1,2,3}, TC = {1,3}, ET = {3} (1 NCR, 2 ED, 3 ET)",
    "both_empty": "Dice 1, HD95 0 mm",
    "one_empty": f"Dice 0, HD95 {EMPTY_HD95_PENALTY_MM} mm (diagonal of the 240x240x155 mm BraTS box)",
    "dice_units": "fraction (table.md and the figure: %)",
    "hd95": "MONAI HausdorffDistanceMetric(percentile=95), symmetric, in mm",
}


def display_name(method: str) -> str:
    """Row name of an input: ``zero`` -> ``zero-fill``, ``full``, or the method's registry name."""
    return DISPLAY_NAMES.get(method, method)


def build_table(rows: Sequence[dict[str, Any]], scenarios: Sequence[Any], methods: Sequence[str],
                meta: dict[str, Any]) -> dict[str, Any]:
    """Aggregate per-case rows into the Table-4-shaped summary (``metric -> row -> region -> column -> value``)."""
    columns = [s.label for s in scenarios]
    row_names = [display_name(m) for m in methods] + [display_name("full")]
    regions = list(REGION_NAMES) + [REGION_AVERAGE]
    table: dict[str, Any] = {**meta, "columns": columns + [MEAN], "rows": row_names,
                             "patterns": {s.label: s.pattern for s in scenarios}, "conventions": CONVENTIONS}
    for metric in METRICS:
        by_row: dict[str, Any] = {}
        for row_name in row_names:
            by_region: dict[str, dict[str, float | None]] = {}
            for region in regions:
                key = f"{metric}_{'mean' if region == REGION_AVERAGE else region}"
                cells: dict[str, float | None] = {}
                if row_name == display_name("full"):
                    values = [r[key] for r in rows if r["input"] == row_name]
                    cells.update({column: None for column in columns})
                    cells[MEAN] = float(np.mean(values)) if values else None
                else:
                    for column in columns:
                        values = [r[key] for r in rows if r["input"] == row_name and r["missing"] == column]
                        cells[column] = float(np.mean(values)) if values else None
                    known = [cells[c] for c in columns if cells[c] is not None]
                    cells[MEAN] = float(np.mean(known)) if known else None
                by_region[region] = cells
            by_row[row_name] = by_region
        table[metric] = by_row
    return table


def _cell(value: float | None, metric: str) -> str:
    if value is None:
        return ""
    return f"{100 * value:.2f}" if metric == "dice" else f"{value:.2f}"


def markdown(table: dict[str, Any]) -> str:
    """The tables as Markdown: Dice (%) and HD95 (mm), mean of regions first, then WT, TC and ET."""
    columns = table["columns"]
    header = "| input | " + " | ".join(f"missing {c}" if c != MEAN else MEAN for c in columns) + " |"
    rule = "|---|" + "---:|" * len(columns)
    lines = [f"# Segmentation evaluation: {table['dataset']}, fold {table['fold']}", "",
             f"Segmenter: `{table['segmenter']}` (folds {', '.join(map(str, table['segmenter_folds']))}); "
             f"{len(table['cases'])} cases: {', '.join(table['cases'])}.", "",
             f"Imputation configuration `{table.get('imputation_configuration')}`; the codebrain row's model: "
             f"`{table.get('codebrain_model', 'CodeBrain')}`.", "",
             "Cells are means over cases; the full-modality row does not depend on the scenario. Empty regions: "
             f"both empty -> {CONVENTIONS['both_empty']}; one empty -> {CONVENTIONS['one_empty']}.", ""]
    titles = {"dice": "Dice (%)", "hd95": "HD95 (mm)"}
    for metric in METRICS:
        for region in [REGION_AVERAGE, *REGION_NAMES]:
            lines += [f"## {titles[metric]}, {region}", "", header, rule]
            for row_name in table["rows"]:
                cells = table[metric][row_name][region]
                lines.append(f"| {row_name} | " + " | ".join(_cell(cells[c], metric) for c in columns) + " |")
            lines.append("")
    return "\n".join(lines)


def table_rows(table: dict[str, Any]) -> list[dict[str, Any]]:
    """The table in long form: one row per (metric, region, input, column)."""
    out = []
    for metric in METRICS:
        for row_name in table["rows"]:
            for region, cells in table[metric][row_name].items():
                for column, value in cells.items():
                    if value is not None:
                        out.append({"metric": metric, "region": region, "input": row_name, "missing": column,
                                    "value": value})
    return out


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Write dict rows as CSV atomically (columns of the first row)."""
    with atomic_path(path) as temp:
        with open(temp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else [])
            writer.writeheader()
            writer.writerows(rows)


@styled
def bar_chart(table: dict[str, Any], path: Path) -> None:
    """Dice (%) per scenario as grouped bars (zero-fill and methods), full as a dashed line; one panel per region."""
    columns = table["columns"]
    bar_rows = [r for r in table["rows"] if r != display_name("full")]
    regions = [REGION_AVERAGE, *REGION_NAMES]
    panel_width = min(16.0, max(4.5, 0.3 * len(columns) * (len(bar_rows) + 1)))
    layout = (2, 2) if len(columns) <= 6 else (4, 1)  # many scenarios: one wide panel per row
    figure, axes = plt.subplots(*layout, figsize=(layout[1] * panel_width + 1.5, layout[0] * 3.6), sharey=True,
                                squeeze=False)
    width = 0.8 / max(1, len(bar_rows))
    positions = np.arange(len(columns))
    for axis, region in zip(axes.flat, regions):
        for index, row_name in enumerate(bar_rows):
            values = [100 * (table["dice"][row_name][region][c] or 0.0) for c in columns]
            axis.bar(positions + (index - (len(bar_rows) - 1) / 2) * width, values, width, label=row_name)
        full = table["dice"][display_name("full")][region][MEAN]
        if full is not None:
            axis.axhline(100 * full, color="black", linestyle="--", linewidth=1, label="full")
        axis.set_xticks(positions, columns, rotation=30 if len(columns) > 6 else 0,
                        ha="right" if len(columns) > 6 else "center")
        axis.set_title(f"Dice, {region}")
        axis.set_ylim(0, 100)
    for axis in axes[:, 0]:
        axis.set_ylabel("Dice (%)")
    for axis in axes[-1]:
        axis.set_xlabel("missing sequence(s)")
    axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    figure.suptitle(f"{table['dataset']} fold {table['fold']}: tumour segmentation with missing sequences")
    figure.tight_layout()
    with atomic_path(path) as temp:
        figure.savefig(temp, dpi=110, format="png")
    plt.close(figure)


def write_reports(output_dir: Path, rows: Sequence[dict[str, Any]], table: dict[str, Any]) -> dict[str, Path]:
    """Write per_case.csv, table.{md,csv,json} and dice_bars.png into ``output_dir``; returns their paths."""
    files = {"per_case": output_dir / "per_case.csv", "markdown": output_dir / "table.md",
             "csv": output_dir / "table.csv", "json": output_dir / "table.json", "figure": output_dir / "dice_bars.png"}
    write_csv(files["per_case"], rows)
    with atomic_path(files["markdown"]) as temp:
        temp.write_text(markdown(table) + "\n")
    write_csv(files["csv"], table_rows(table))
    write_json(files["json"], table)
    bar_chart(table, files["figure"])
    return files
