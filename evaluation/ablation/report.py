"""Ablation tables shaped like the papers' (Markdown, CSV, JSON) and the PSNR-against-d plot.

A group's table (:func:`group_table`) has one row per (stage, setting), with PSNR (dB), SSIM (x100) and MAE
(x1000) as O->O, M->O and mean (the unweighted mean over all (pattern, missing sequence) pairs, the papers'
"mean"), the model folder and iterations it came from, the paper's IXI figures where the paper has the same
setting, and the papers' claims checked on these numbers. The Markdown shows it as the paper does:

* ``metrics`` layout (CVPR Table 3, v1 Table 3): ``Stages | Settings | PSNR | SSIM | MAE`` (means);
* ``psnr`` layout (CVPR Table 5 and Fig. 6, v1 Fig. 6): one line per setting, a PSNR column per stage;

followed by the O->O / M->O details. Files in the output folder: ``<group>.md|csv|json`` per group,
``ablations.md`` / ``ablations.json`` with every group, and ``dim_psnr.png`` with the ``dim`` group.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from codebrain_seg.errors import InputError
from codebrain_seg.figure_style import styled
from codebrain_seg.io import atomic_path, write_json  # noqa: E402
from evaluation.ablation.groups import STAGE_LABELS, Group  # noqa: E402

METRICS = ("psnr", "ssim", "mae")
SCOPES = ("mean", "O->O", "M->O")
# Key of each scope in the aggregate's summaries (evaluation.imputation.aggregate.summarise_pairs).
SUMMARY_KEYS = {"mean": "overall", "O->O": "O->O", "M->O": "M->O"}
HEADERS = {"psnr": "PSNR (dB) ↑", "ssim": "SSIM (%) ↑", "mae": "MAE (×1000) ↓"}
CSV_SCOPES = {"mean": "mean", "O->O": "o2o", "M->O": "m2o"}
# A verdict decided by less than this PSNR margin is reported as a tie: the papers' own ablation gaps are 0.26 dB
# and more, and a few evaluation cases do not resolve differences of hundredths of a dB.
TIE_DB = 0.1


def _metric_scopes(summary: dict[str, Any], metric: str) -> dict[str, float | None]:
    return {scope: (summary[key][metric] if summary.get(key) is not None else None)
            for scope, key in SUMMARY_KEYS.items()}


def group_table(group: Group, results: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    """The JSON-ready table of one group.

    Args:
        group: the group.
        results: ``(row label, stage) -> {"summary": the aggregate's summary of the model (keys overall, O->O,
            M->O, num_pairs), "model": results folder name, "iterations": {"stage1": n, "stage2": n},
            "cases": number of cases, "evaluation": folder}`` for every row and stage of the group.

    Raises:
        ValueError: a (row, stage) of the group has no result.
    """
    absent = [f"{label} ({stage})" for label in (r.label for r in group.rows) for stage in group.stages
              if (label, stage) not in results]
    if absent:
        raise InputError(f"group {group.name!r}: no evaluation for {', '.join(absent)}")
    rows = []
    for stage in group.stages:
        for row in group.rows:
            result = results[(row.label, stage)]
            summary = result["summary"]
            paper = row.paper.get(stage)
            rows.append({
                "stage": stage, "stage_label": STAGE_LABELS[stage], "setting": row.label, **row.extra,
                "model": result.get("model"), "iterations": result.get("iterations", {}),
                "cases": result.get("cases"), "num_pairs": summary.get("num_pairs"),
                **{metric: _metric_scopes(summary, metric) for metric in METRICS},
                "paper_ixi": dict(zip(METRICS, paper)) if paper else None,
                "evaluation": result.get("evaluation"),
            })
    psnr = {(r["setting"], r["stage"]): r["psnr"]["mean"] for r in rows}
    claims = []
    for claim in group.claims:
        values = {label: psnr.get((label, claim.stage)) for label in (claim.better, *claim.worse)}
        held, margin = None, None
        if all(v is not None for v in values.values()):
            best = values[claim.better]
            held = all(best > values[w] if claim.strict else best >= values[w] for w in claim.worse)
            margin = best - max(values[w] for w in claim.worse)
        claims.append({"text": claim.text, "stage": claim.stage, "better": claim.better,
                       "worse": list(claim.worse), "psnr_mean": values, "held": held, "margin_db": margin,
                       "tie": margin is not None and abs(margin) < TIE_DB})
    return {"group": group.name, "title": group.title, "source": group.source, "stages": list(group.stages),
            "layout": group.layout, "note": group.note, "extra_columns": _extra_columns(group),
            "rows": rows, "claims": claims}


def _extra_columns(group: Group) -> list[str]:
    columns: list[str] = []
    for row in group.rows:
        columns += [key for key in row.extra if key not in columns]
    return columns


def _number(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _paper_cell(paper: dict[str, float | None] | None) -> str:
    if not paper:
        return ""
    return " / ".join(_number(paper[m]) for m in METRICS)


def _iterations(iterations: dict[str, Any]) -> str:
    return " / ".join(str(iterations.get(k, "-")) for k in ("stage1", "stage2") if k in iterations)


def markdown(table: dict[str, Any]) -> str:
    """The Markdown of one group's table (module docstring)."""
    rows, extras = table["rows"], table["extra_columns"]
    with_paper = any(r["paper_ixi"] for r in rows)
    lines = [f"## {table['title']} (`{table['group']}`)", "", f"Source: {table['source']}.", ""]
    if table["layout"] == "metrics":
        header = ["Stages", "Settings", *extras, *(HEADERS[m] for m in METRICS)]
        if with_paper:
            header.append("paper, IXI (PSNR / SSIM / MAE)")
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in rows:
            cells = [row["stage_label"], row["setting"], *(str(row.get(k, "")) for k in extras),
                     *(_number(row[m]["mean"]) for m in METRICS)]
            if with_paper:
                cells.append(_paper_cell(row["paper_ixi"]))
            lines.append("| " + " | ".join(cells) + " |")
    else:
        stages = table["stages"]
        header = ["Settings", *extras, *(f"{STAGE_LABELS[s]} PSNR (dB) ↑" for s in stages)]
        if with_paper:
            header += [f"paper, IXI: {STAGE_LABELS[s]} PSNR" for s in stages]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        by_key = {(r["setting"], r["stage"]): r for r in rows}
        for setting in dict.fromkeys(r["setting"] for r in rows):
            first = by_key[(setting, stages[0])]
            cells = [setting, *(str(first.get(k, "")) for k in extras),
                     *(_number(by_key[(setting, s)]["psnr"]["mean"]) for s in stages)]
            if with_paper:
                cells += [_number((by_key[(setting, s)]["paper_ixi"] or {}).get("psnr")) for s in stages]
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Details (mean = unweighted mean over all (pattern, missing sequence) pairs; O->O = one given "
              "sequence, M->O = two or more):", ""]
    header = ["Stages", "Settings", "model", "iterations (I / II)", "cases"]
    header += [f"{m.upper()} {scope}" for m in METRICS for scope in ("O->O", "M->O", "mean")]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["stage_label"], row["setting"], f"`{row['model']}`", _iterations(row["iterations"]),
                 str(row["cases"])]
        cells += [_number(row[m][scope]) for m in METRICS for scope in ("O->O", "M->O", "mean")]
        lines.append("| " + " | ".join(cells) + " |")
    if table["claims"]:
        lines += ["", "The paper's claims on these numbers (PSNR, mean):", ""]
        for claim in table["claims"]:
            verdict = {True: "**held**", False: "**did not hold**", None: "not checked"}[claim["held"]]
            values = ", ".join(f"{label} {_number(v)} dB" for label, v in claim["psnr_mean"].items())
            if claim.get("margin_db") is not None:
                values += f"; margin {claim['margin_db']:+.3f} dB"
                if claim["tie"]:
                    values += f", under {TIE_DB} dB: a tie at this precision"
            lines.append(f"- {claim['text']} ({STAGE_LABELS[claim['stage']]}): {verdict} ({values})")
    if table["note"]:
        lines += ["", f"Note: {table['note']}"]
    return "\n".join(lines) + "\n"


def csv_rows(table: dict[str, Any]) -> list[dict[str, Any]]:
    """Flat rows of one group's table, one per (stage, setting)."""
    flat = []
    for row in table["rows"]:
        entry: dict[str, Any] = {"group": table["group"], "stage": row["stage"], "setting": row["setting"]}
        entry.update({key: row.get(key) for key in table["extra_columns"]})
        entry.update({"model": row["model"], "stage1_iterations": row["iterations"].get("stage1"),
                      "stage2_iterations": row["iterations"].get("stage2"), "cases": row["cases"],
                      "num_pairs": row["num_pairs"]})
        for metric in METRICS:
            for scope in SCOPES:
                entry[f"{metric}_{CSV_SCOPES[scope]}"] = row[metric][scope]
        for metric in METRICS:
            entry[f"paper_ixi_{metric}"] = (row["paper_ixi"] or {}).get(metric)
        flat.append(entry)
    return flat


def _write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    columns = list(rows[0]) if rows else []
    with atomic_path(path) as temp:
        with open(temp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)


@styled
def plot_psnr_against_dim(path: Path, table: dict[str, Any]) -> None:
    """PSNR (mean) against the code dimension d, one line per stage (v1 Fig. 6); written atomically."""
    figure, axis = plt.subplots(figsize=(4.5, 3.2))
    for stage in table["stages"]:
        points = sorted((r["d"], r["psnr"]["mean"]) for r in table["rows"] if r["stage"] == stage)
        axis.plot([p[0] for p in points], [p[1] for p in points], marker="o",
                  label={"rec": "Stage I (reconstruction)", "imp": "Stage II (imputation)"}[stage])
    axis.set_xlabel("code dimension d")
    axis.set_ylabel("PSNR (dB), mean over pairs")
    axis.set_xticks(sorted({r["d"] for r in table["rows"]}))
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    axis.set_title("CodeBrain v1: PSNR against d", fontsize=9)
    with atomic_path(path) as temp:
        figure.savefig(temp, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)


def write_report(out_dir: Path, tables: Sequence[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Path]:
    """Write every group's files and the combined ones (module docstring); returns ``{name: path}``."""
    out_dir = Path(out_dir)
    written: dict[str, Path] = {}
    for table in tables:
        name = table["group"]
        with atomic_path(out_dir / f"{name}.md") as temp:
            temp.write_text(markdown(table))
        _write_csv(out_dir / f"{name}.csv", csv_rows(table))
        write_json(out_dir / f"{name}.json", {**meta, **table})
        written.update({f"{name}.md": out_dir / f"{name}.md", f"{name}.csv": out_dir / f"{name}.csv",
                        f"{name}.json": out_dir / f"{name}.json"})
        if name == "dim":
            plot_psnr_against_dim(out_dir / "dim_psnr.png", table)
            written["dim_psnr.png"] = out_dir / "dim_psnr.png"
    header = (f"# CodeBrain ablations: {meta.get('dataset')}, fold {meta.get('fold')}, configuration "
              f"{meta.get('configuration')}, cases {meta.get('cases')}\n\nPaper protocol (middle slices, whole "
              "image, data range 1); Rec. = Stage I decoding the oracle code of the complete stack (an upper "
              "bound), Imp. = Stage II imputation. Settings: `" + json.dumps(
                  {k: meta.get(k) for k in ("iterations_requested", "trained_now")}) + "`.\n")
    with atomic_path(out_dir / "ablations.md") as temp:
        temp.write_text(header + "\n" + "\n".join(markdown(table) for table in tables))
    write_json(out_dir / "ablations.json", {**meta, "groups": list(tables)})
    written["ablations.md"] = out_dir / "ablations.md"
    written["ablations.json"] = out_dir / "ablations.json"
    return written
