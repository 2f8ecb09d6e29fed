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
DISPLAY_NAMES = {"zero": "zero-fill", "full": "full", "missing": "Missing"}
CONVENTIONS = {
    "regions": "WT = necrotic core + oedema + enhancing, TC = necrotic core + enhancing, ET = enhancing; each label "
               "map's own label values are in 'mapping'",
    "recovery": "(row - baseline) / (full - baseline) of the Dice; baseline = zero-fill (fixed protocol) or the "
                "Missing segmenter (retrained protocol); empty where full is not better than the baseline",
    "both_empty": "Dice 1, HD95 0 mm",
    "one_empty": f"Dice 0, HD95 {EMPTY_HD95_PENALTY_MM} mm (diagonal of the 240x240x155 mm BraTS box)",
    "dice_units": "fraction (table.md and the figure: %)",
    "hd95": "MONAI HausdorffDistanceMetric(percentile=95), symmetric, in mm",
}


def display_name(method: str) -> str:
    """Row name of an input: ``zero`` -> ``zero-fill``, ``full``, or the method's registry name."""
    return DISPLAY_NAMES.get(method, method)


def build_table(rows: Sequence[dict[str, Any]], scenarios: Sequence[Any], methods: Sequence[str],
                meta: dict[str, Any], baseline: str = "zero") -> dict[str, Any]:
    """Aggregate per-case rows into the Table-4-shaped summary (``metric -> row -> region -> column -> value``).

    ``baseline`` is the row every other one is measured against in ``recovery`` (:func:`recovery`): zero-fill for
    the fixed protocol, the Missing segmenter for the retrained one.
    """
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
    table["baseline"] = display_name(baseline)
    table["recovery"] = recovery(table, display_name(baseline))
    return table


def recovery(table: dict[str, Any], baseline: str) -> dict[str, dict[str, dict[str, float | None]]]:
    """Recovered fraction of the Dice gap per row, region and column: ``(row - baseline) / (full - baseline)``.

    1 = the row segments as well as with every real sequence, 0 = no better than the baseline (zero-fill, or the
    segmenter trained on the available sequences only); None where the full row is not better than the baseline
    (the gap is empty: nothing to recover) or a value is missing.
    """
    dice, full = table["dice"], display_name("full")
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for row_name in table["rows"]:
        if row_name in (baseline, full):
            continue
        out[row_name] = {}
        for region, cells in dice[row_name].items():
            reference = dice[full][region][MEAN]
            out[row_name][region] = {}
            for column, value in cells.items():
                base = dice[baseline][region][column]
                gap = None if reference is None or base is None else reference - base
                out[row_name][region][column] = (None if value is None or gap is None or gap <= 0
                                                 else float((value - base) / gap))
    return out


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
    budget = table.get("segmenter_budget")
    if budget:
        lines += ["Segmenter training: " + "; ".join(f"{name}: {_budget_text(item)}" for name, item in budget.items())
                  + ".", ""]
    baseline = table.get("baseline", display_name("zero"))
    lines += [f"## Recovered fraction of the Dice gap, (row - {baseline}) / (full - {baseline})", "",
              "| input | region | " + " | ".join(f"missing {c}" if c != MEAN else MEAN for c in columns) + " |",
              "|---|---|" + "---:|" * len(columns)]
    for row_name, by_region in table.get("recovery", {}).items():
        for region in [REGION_AVERAGE, *REGION_NAMES]:
            lines.append(f"| {row_name} | {region} | " + " | ".join(
                "" if by_region[region][c] is None else f"{by_region[region][c]:.2f}" for c in columns) + " |")
    lines.append("")
    for metric in METRICS:
        for region in [REGION_AVERAGE, *REGION_NAMES]:
            lines += [f"## {titles[metric]}, {region}", "", header, rule]
            for row_name in table["rows"]:
                cells = table[metric][row_name][region]
                lines.append(f"| {row_name} | " + " | ".join(_cell(cells[c], metric) for c in columns) + " |")
            lines.append("")
    return "\n".join(lines)


def _budget_text(item: dict[str, Any]) -> str:
    """``nnUNetTrainerCPU, 32 x 50 iterations, 54.2 CPU-min (2 threads)`` from a training record."""
    parts = [str(item.get("trainer", "?"))]
    if item.get("epochs"):
        parts.append(f"{item['epochs']} x {item.get('iterations_per_epoch', '?')} iterations")
    if item.get("seconds") is not None:
        parts.append(f"{item['seconds'] / 60:.1f} min training ({item.get('torch_threads', '?')} threads"
                     + (", resumed: this part only" if item.get("resumed") else "") + ")")
    return ", ".join(parts)


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
    for row_name, by_region in table.get("recovery", {}).items():
        for region, cells in by_region.items():
            for column, value in cells.items():
                if value is not None:
                    out.append({"metric": "recovery", "region": region, "input": row_name, "missing": column,
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
            offsets = positions + (index - (len(bar_rows) - 1) / 2) * width
            axis.bar(offsets, values, width, label=row_name)
            recovered = table.get("recovery", {}).get(row_name, {}).get(region, {})
            for x, value, column in zip(offsets, values, columns):
                if recovered.get(column) is not None:  # the recovered fraction above each imputed bar
                    axis.text(x, min(value, 92) + 2, f"{recovered[column]:.2f}", ha="center", va="bottom",
                              fontsize="xx-small", rotation=90)
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
    protocol = f", {table['protocol']} protocol" if table.get("protocol") else ""
    figure.suptitle(f"{table['dataset']} fold {table['fold']}{protocol}: tumour segmentation with missing sequences "
                    f"(numbers: recovered fraction)")
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
