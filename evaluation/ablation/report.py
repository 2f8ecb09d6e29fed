"""Ablation tables shaped like the papers' (Markdown, CSV, JSON) and the PSNR-against-d plot.

A group's table (:func:`group_table`) has one row per (stage, setting), with PSNR (dB), SSIM (x100) and MAE
(x1000) as O->O, M->O and mean (the unweighted mean over all (pattern, missing sequence) pairs, the papers'
"mean"), the model folder and iterations it came from, the paper's IXI figures where the paper has the same
setting, and the papers' claims checked on these numbers. The Markdown shows it as the paper does:

* ``metrics`` layout (CVPR Table 3, v1 Table 3): ``Stages | Settings | PSNR | SSIM | MAE`` (means);
* ``psnr`` layout (CVPR Table 5 and Fig. 6, v1 Fig. 6): one line per setting, a PSNR column per stage;

followed by the O->O / M->O details. With several seeds per setting every figure is the mean over seeds and is
shown as ``mean ± SD`` (sample standard deviation over seeds); the number of seeds is in every table, and the
claims are decided by :mod:`evaluation.ablation.verdicts` ("held", "did not hold", or "not resolved at this
budget"; with one seed, today's rule, marked single-seed). Files in the output folder: ``<group>.md|csv|json``
per group, ``ablations.md`` / ``ablations.json`` with every group, and ``dim_psnr.png`` with the ``dim`` group.
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
from evaluation.ablation.verdicts import (
    NO,
    TIE_DB,
    UNRESOLVED,
    YES,
    ArmScore,
    arm_score,
    claim_verdict,
)

METRICS = ("psnr", "ssim", "mae")
SCOPES = ("mean", "O->O", "M->O")
# Key of each scope in the aggregate's summaries (evaluation.imputation.aggregate.summarise_pairs).
SUMMARY_KEYS = {"mean": "overall", "O->O": "O->O", "M->O": "M->O"}
HEADERS = {"psnr": "PSNR (dB) ↑", "ssim": "SSIM (%) ↑", "mae": "MAE (×1000) ↓"}
CSV_SCOPES = {"mean": "mean", "O->O": "o2o", "M->O": "m2o"}
VERDICT_WORDS = {YES: "**held**", NO: "**did not hold**", UNRESOLVED: "**not resolved at this budget**",
                 None: "not checked"}


def _metric_scopes(summaries: Sequence[dict[str, Any]], metric: str
                   ) -> tuple[dict[str, float | None], dict[str, float | None]]:
    """``({scope: mean over seeds}, {scope: sample SD over seeds or None})`` of one metric (None where a seed's
    summary lacks the scope)."""
    means: dict[str, float | None] = {}
    spreads: dict[str, float | None] = {}
    for scope, key in SUMMARY_KEYS.items():
        values = [summary[key][metric] for summary in summaries if summary.get(key) is not None]
        if len(values) < len(summaries) or not values:
            means[scope], spreads[scope] = None, None
            continue
        score = arm_score(values)
        means[scope], spreads[scope] = score.mean, score.spread
    return means, spreads


def _seed_results(value: dict[str, Any] | Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One setting's results, one per seed (a single dict is one seed)."""
    return [value] if isinstance(value, dict) else list(value)


def group_table(group: Group, results: dict[tuple[str, str], dict[str, Any] | Sequence[dict[str, Any]]]
                ) -> dict[str, Any]:
    """The JSON-ready table of one group.

    Args:
        group: the group.
        results: ``(row label, stage) -> {"summary": the aggregate's summary of the model (keys overall, O->O,
            M->O, num_pairs), "model": results folder name, "iterations": {"stage1": n, "stage2": n},
            "cases": number of cases, "evaluation": folder, "seed_index": s}`` for every row and stage of the
            group, or a list of such dicts, one per seed (seed 0 first).

    Returns:
        ``{"group", "title", "source", "stages", "layout", "note", "extra_columns", "seeds": the most seeds of a
        row, "rows": [...], "claims": [...]}``; each row's ``psnr`` / ``ssim`` / ``mae`` are ``{scope: mean over
        seeds}`` (one seed: that seed's figure), ``spread`` the same with the sample SD (None with one seed),
        ``seeds`` and ``per_seed``; each claim has today's ``held`` / ``margin_db`` / ``tie`` plus ``verdict``
        (:func:`evaluation.ablation.verdicts.claim_verdict`).

    Raises:
        ValueError: a (row, stage) of the group has no result.
    """
    absent = [f"{label} ({stage})" for label in (r.label for r in group.rows) for stage in group.stages
              if not _seed_results(results.get((label, stage), []))]
    if absent:
        raise InputError(f"group {group.name!r}: no evaluation for {', '.join(absent)}")
    rows = []
    for stage in group.stages:
        for row in group.rows:
            seeds = _seed_results(results[(row.label, stage)])
            first, summaries = seeds[0], [result["summary"] for result in seeds]
            scores = {metric: _metric_scopes(summaries, metric) for metric in METRICS}
            paper = row.paper.get(stage)
            given = [result.get("given") for result in seeds]
            given_score = arm_score([g["overall"]["psnr"] for g in given]) if all(given) else None
            rows.append({
                "stage": stage, "stage_label": STAGE_LABELS[stage], "setting": row.label, **row.extra,
                "model": first.get("model"), "iterations": first.get("iterations", {}),
                "training_precision": _precisions(seeds), "cases": first.get("cases"), "num_pairs": first["summary"].get("num_pairs"),
                **{metric: scores[metric][0] for metric in METRICS},
                "paper_ixi": dict(zip(METRICS, paper)) if paper else None,
                "evaluation": first.get("evaluation"),
                "seeds": len(seeds), "spread": {metric: scores[metric][1] for metric in METRICS},
                # Rec. rows: the same decoding scored on the given sequences (mean over pairs, and its SD)
                "given_psnr": None if given_score is None else {"mean": given_score.mean, "sd": given_score.spread},
                "per_seed": [{"seed_index": result.get("seed_index", index), "model": result.get("model"),
                              "iterations": result.get("iterations", {}),
                              "psnr_mean": (result["summary"].get("overall") or {}).get("psnr"),
                              "evaluation": result.get("evaluation")} for index, result in enumerate(seeds)],
            })
    by_key = {(r["setting"], r["stage"]): r for r in rows}
    claims = []
    for claim in group.claims:
        labels = (claim.better, *claim.worse)
        keyed = {label: by_key.get((label, claim.stage)) for label in labels}
        arms = {label: ArmScore(r["psnr"]["mean"], r["spread"]["psnr"]["mean"], r["seeds"])
                if r is not None and r["psnr"]["mean"] is not None else None for label, r in keyed.items()}
        decided = claim_verdict(arms, claim.better, claim.worse, claim.strict)
        claims.append({"text": claim.text, "stage": claim.stage, "better": claim.better,
                       "worse": list(claim.worse),
                       "psnr_mean": {label: (r["psnr"]["mean"] if r else None) for label, r in keyed.items()},
                       "held": decided["held"], "margin_db": decided["margin_db"], "tie": decided["tie"],
                       "verdict": decided["verdict"], "single_seed": decided["single_seed"],
                       "seeds": decided["seeds"], "threshold_db": decided["threshold_db"],
                       "psnr_spread": {label: (r["spread"]["psnr"]["mean"] if r else None)
                                       for label, r in keyed.items()},
                       "pair_verdicts": {label: pair["verdict"] for label, pair in decided["pairs"].items()}})
    return {"group": group.name, "title": group.title, "source": group.source, "stages": list(group.stages),
            "layout": group.layout, "note": group.note, "extra_columns": _extra_columns(group),
            "seeds": max(r["seeds"] for r in rows), "rows": rows, "claims": claims}


def _precisions(seeds: Sequence[dict[str, Any]]) -> str:
    """The training precision(s) of one setting's seeds, e.g. ``bf16`` (``?`` for an evaluation that predates the
    record, ``bf16 / fp32`` if the seeds differ, which a comparison should not)."""
    found = [str(result.get("training_precision") or "?") for result in seeds]
    return " / ".join(dict.fromkeys(found))


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


def _cell(row: dict[str, Any], metric: str, scope: str = "mean") -> str:
    """``mean`` (one seed) or ``mean ± SD`` (several seeds) of one metric and scope."""
    spread = row.get("spread", {}).get(metric, {}).get(scope)
    return _number(row[metric][scope]) + ("" if spread is None else f" ± {spread:.2f}")


def _seeds_line(table: dict[str, Any]) -> str:
    """What the cells and verdicts of a table are, given its number of seeds."""
    seeds = table.get("seeds", 1)
    if seeds <= 1:
        return ("Seeds per setting: 1 (single seed: the spread over seeds is unknown, and the verdicts below are "
                f"single-seed: the ordering of the two figures, with gaps under {TIE_DB} dB flagged as ties).")
    return (f"Seeds per setting: {seeds} (cells: mean ± sample SD over seeds; an ordering is decided only when the "
            f"gap exceeds the larger SD of the two settings and {TIE_DB} dB, else it is not resolved at this "
            "budget).")


def _model_cell(row: dict[str, Any]) -> str:
    """Seed 0's model folder, and how many seeds' ``-seed<s>`` folders go with it."""
    extra = row.get("seeds", 1) - 1
    return f"`{row['model']}`" + (f" (+ {extra} `-seed<s>` folder{'s' if extra > 1 else ''})" if extra else "")


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
                     *(_cell(row, m) for m in METRICS)]
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
                     *(_cell(by_key[(setting, s)], "psnr") for s in stages)]
            if with_paper:
                cells += [_number((by_key[(setting, s)]["paper_ixi"] or {}).get("psnr")) for s in stages]
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", _seeds_line(table)]
    lines += ["", "Details (mean = unweighted mean over all (pattern, missing sequence) pairs; O->O = one given "
              "sequence, M->O = two or more):", ""]
    with_given = any(r.get("given_psnr") for r in rows)
    header = ["Stages", "Settings", "model", "iterations (I / II)", "precision", "cases", "seeds"]
    header += [f"{m.upper()} {scope}" for m in METRICS for scope in ("O->O", "M->O", "mean")]
    header += ["PSNR of the given sequences"] if with_given else []
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["stage_label"], row["setting"], _model_cell(row), _iterations(row["iterations"]),
                 row.get("training_precision") or "?", str(row["cases"]), str(row.get("seeds", 1))]
        cells += [_cell(row, m, scope) for m in METRICS for scope in ("O->O", "M->O", "mean")]
        cells += [_given_cell(row.get("given_psnr"))] if with_given else []
        lines.append("| " + " | ".join(cells) + " |")
    if table["claims"]:
        lines += ["", "The paper's claims on these numbers (PSNR, mean):", ""]
        lines += [_claim_line(claim) for claim in table["claims"]]
    if table["note"]:
        lines += ["", f"Note: {table['note']}"]
    return "\n".join(lines) + "\n"


def _given_cell(given: dict[str, float | None] | None) -> str:
    if not given:
        return "-"
    return _number(given["mean"]) + ("" if given["sd"] is None else f" ± {given['sd']:.2f}")


def _claim_line(claim: dict[str, Any]) -> str:
    """One claim's Markdown line: the verdict, the figures (± SD with seeds), the margin and what decided it."""
    verdict = VERDICT_WORDS[claim.get("verdict")]
    spreads = claim.get("psnr_spread") or {}
    values = ", ".join(f"{label} {_number(v)}" + ("" if spreads.get(label) is None else f" ± {spreads[label]:.2f}")
                       + " dB" for label, v in claim["psnr_mean"].items())
    if claim.get("margin_db") is not None:
        values += f"; margin {claim['margin_db']:+.3f} dB"
        if claim.get("single_seed"):
            values = "single seed; " + values
            if claim["tie"]:
                values += f", under {TIE_DB} dB: a tie at this precision"
        else:
            values = f"{claim['seeds']} seeds; " + values + f" vs threshold {claim['threshold_db']:.3f} dB"
    return f"- {claim['text']} ({STAGE_LABELS[claim['stage']]}): {verdict} ({values})"


def _csv_verdicts(table: dict[str, Any], setting: str, stage: str) -> str:
    """The verdicts of the claims whose better arm is this (setting, stage), ``'; '``-joined."""
    return "; ".join(f"{claim['text']}: {claim.get('verdict')}" + (" (single seed)" if claim.get("single_seed")
                                                                    else "")
                     for claim in table["claims"] if claim["better"] == setting and claim["stage"] == stage)


def csv_rows(table: dict[str, Any]) -> list[dict[str, Any]]:
    """Flat rows of one group's table, one per (stage, setting): today's columns, then ``seeds``, the SD of every
    metric and scope (empty with one seed) and the verdicts of the claims this setting is the better arm of."""
    flat = []
    for row in table["rows"]:
        entry: dict[str, Any] = {"group": table["group"], "stage": row["stage"], "setting": row["setting"]}
        entry.update({key: row.get(key) for key in table["extra_columns"]})
        entry.update({"model": row["model"], "stage1_iterations": row["iterations"].get("stage1"),
                      "stage2_iterations": row["iterations"].get("stage2"),
                      "training_precision": row.get("training_precision"), "cases": row["cases"],
                      "num_pairs": row["num_pairs"]})
        for metric in METRICS:
            for scope in SCOPES:
                entry[f"{metric}_{CSV_SCOPES[scope]}"] = row[metric][scope]
        for metric in METRICS:
            entry[f"paper_ixi_{metric}"] = (row["paper_ixi"] or {}).get(metric)
        entry["seeds"] = row.get("seeds", 1)
        for metric in METRICS:
            for scope in SCOPES:
                entry[f"{metric}_{CSV_SCOPES[scope]}_sd"] = row.get("spread", {}).get(metric, {}).get(scope)
        given = row.get("given_psnr") or {}
        entry["given_psnr_mean"], entry["given_psnr_mean_sd"] = given.get("mean"), given.get("sd")
        entry["verdicts"] = _csv_verdicts(table, row["setting"], row["stage"])
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


def _settings(meta: dict[str, Any]) -> dict[str, Any]:
    """The run settings the combined Markdown quotes (the seeds only when the run recorded them)."""
    shown = {key: meta.get(key) for key in ("iterations_requested", "trained_now")}
    return {**shown, **{key: meta[key] for key in ("seeds", "base_seed") if key in meta}}


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
                  _settings(meta)) + "`.\n")
    with atomic_path(out_dir / "ablations.md") as temp:
        temp.write_text(header + "\n" + "\n".join(markdown(table) for table in tables))
    write_json(out_dir / "ablations.json", {**meta, "groups": list(tables)})
    written["ablations.md"] = out_dir / "ablations.md"
    written["ablations.json"] = out_dir / "ablations.json"
    return written
