"""Averaging imputation scores into the paper's tables (as the CodeBrain reference implementation averages them).

Vocabulary:

* **pattern** — which sequences are given, as a string of bits in channel order, ``1`` = available,
  ``0`` = missing (IXI ``"011"`` = T2 and PD given, T1 missing). There are ``2^C - 2`` patterns.
* **pair** — (pattern, one missing sequence). IXI has 9 pairs, BraTS 28.
* **score rows** — one per 2D slice (paper protocol) or per 3D volume and region (volume protocol), each with
  ``method, protocol, region, case, pattern, missing, psnr, ssim, mae``.

Averaging, exactly as the reference:

1. pair mean = mean over all rows (slices of all cases) of the pair;
2. pattern mean = mean of its pairs' means;
3. O->O ("one input") = mean of the pairs whose pattern has one available sequence; M->O = pairs with two or
   more available; overall = unweighted mean over all pairs; variance = population variance over the pairs.
"""
from __future__ import annotations

import csv
import itertools
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from codebrain_seg.errors import InputError
from codebrain_seg.io import atomic_path
from codebrain_seg.metrics import METRIC_NAMES

GROUP_KEYS = ("method", "protocol", "region")
PAIR_KEYS = GROUP_KEYS + ("pattern", "missing")
SUMMARY_ROWS = ("O->O", "M->O", "overall", "variance")


def pattern_string(available: Sequence[bool]) -> str:
    """``[False, True, True]`` -> ``"011"``."""
    return "".join("1" if flag else "0" for flag in available)


def parse_pattern(pattern: str) -> list[bool]:
    """``"011"`` -> ``[False, True, True]``; raises on anything but 0/1 characters."""
    if not pattern or set(pattern) - {"0", "1"}:
        raise InputError(f"a pattern is a string of 0 (missing) and 1 (available), got {pattern!r}")
    return [bit == "1" for bit in pattern]


def all_patterns(num_channels: int) -> list[str]:
    """Every pattern with at least one sequence given and one missing (``2^C - 2``).

    Ordered by the number of available sequences (one-input patterns first, as in the paper's O->O / M->O split),
    then by the bits, highest first.
    """
    if num_channels < 2:
        raise InputError(f"imputation needs at least 2 sequences, got {num_channels}")
    patterns = ["".join(bits) for bits in itertools.product("10", repeat=num_channels)]
    patterns = [p for p in patterns if 0 < p.count("1") < num_channels]
    return sorted(patterns, key=lambda p: (p.count("1"), [-int(b) for b in p]))


def describe_pattern(pattern: str, channel_names: Sequence[str]) -> str:
    """``"011"`` with (T1, T2, PD) -> ``"T2+PD -> T1"``."""
    flags = parse_pattern(pattern)
    given = [name for name, flag in zip(channel_names, flags) if flag]
    missing = [name for name, flag in zip(channel_names, flags) if not flag]
    return f"{'+'.join(given)} -> {', '.join(missing)}"


def pair_means(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean of every metric per (method, protocol, region, pattern, missing); ``count`` = rows averaged."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[tuple(row[key] for key in PAIR_KEYS)].append(row)
    result = []
    for key, members in groups.items():
        entry: dict[str, Any] = dict(zip(PAIR_KEYS, key))
        for metric in METRIC_NAMES:
            entry[metric] = float(np.mean([member[metric] for member in members]))
        entry["count"] = len(members)
        entry["cases"] = len({member.get("case") for member in members})
        result.append(entry)
    return result


def _mean_of(pairs: Sequence[dict[str, Any]]) -> dict[str, float] | None:
    if not pairs:
        return None
    return {metric: float(np.mean([pair[metric] for pair in pairs])) for metric in METRIC_NAMES}


def summarise_pairs(pairs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per-pattern means, O->O, M->O, overall and variance of one (method, protocol, region) group.

    Args:
        pairs: pair means (one per (pattern, missing)), each with ``pattern``, ``missing`` and the metrics.

    Returns:
        ``{"patterns": {pattern: {metrics..., "missing": [...]}}, "pairs": {pattern: {missing: metrics}},
        "O->O": metrics or None, "M->O": metrics or None, "overall": metrics, "variance": metrics,
        "num_pairs": int}``.
    """
    if not pairs:
        raise InputError("no pairs to summarise")
    seen = set()
    for pair in pairs:
        key = (pair["pattern"], pair["missing"])
        if key in seen:
            raise InputError(f"pair {key} appears twice: aggregate one (method, protocol, region) at a time")
        seen.add(key)
    by_pattern: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for pair in pairs:
        by_pattern[pair["pattern"]].append(pair)
    patterns = {}
    for pattern in sorted(by_pattern, key=lambda p: (p.count("1"), [-int(b) for b in p])):
        members = by_pattern[pattern]
        patterns[pattern] = {**_mean_of(members), "missing": [member["missing"] for member in members]}
    one_input = [pair for pair in pairs if pair["pattern"].count("1") == 1]
    many_inputs = [pair for pair in pairs if pair["pattern"].count("1") >= 2]
    return {
        "patterns": patterns,
        "pairs": {pattern: {member["missing"]: {metric: member[metric] for metric in METRIC_NAMES}
                            for member in members} for pattern, members in by_pattern.items()},
        "O->O": _mean_of(one_input),
        "M->O": _mean_of(many_inputs),
        "overall": _mean_of(pairs),
        "variance": {metric: float(np.var([pair[metric] for pair in pairs])) for metric in METRIC_NAMES},
        "num_pairs": len(pairs),
    }


def summarise(rows: Iterable[dict[str, Any]]) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
    """Score rows -> ``{protocol: {region: {method: summary}}}`` (see :func:`summarise_pairs`)."""
    grouped: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for pair in pair_means(rows):
        grouped[tuple(pair[key] for key in GROUP_KEYS)].append(pair)
    result: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    for (method, protocol, region), pairs in grouped.items():
        result.setdefault(protocol, {}).setdefault(region, {})[method] = summarise_pairs(pairs)
    return result


def _cell(values: dict[str, float] | None) -> str:
    if values is None:
        return "-"
    return f"{values['psnr']:.2f} / {values['ssim']:.2f} / {values['mae']:.2f}"


def markdown_table(summaries: dict[str, dict[str, Any]], channel_names: Sequence[str], title: str = "") -> str:
    """One Markdown table: rows = patterns, then O->O, M->O, overall, variance; columns = methods.

    Cells are ``PSNR / SSIM / MAE`` (dB, x100, x1000). Per-pair values follow in a second table.
    """
    methods = list(summaries)
    patterns: list[str] = []
    for summary in summaries.values():
        patterns += [p for p in summary["patterns"] if p not in patterns]
    patterns.sort(key=lambda p: (p.count("1"), [-int(b) for b in p]))
    lines = [f"### {title}", ""] if title else []
    lines += ["| pattern | given -> missing | " + " | ".join(methods) + " |",
              "|---|---|" + "---|" * len(methods)]
    for pattern in patterns:
        cells = [_cell(summaries[m]["patterns"].get(pattern)) for m in methods]
        lines.append(f"| {pattern} | {describe_pattern(pattern, channel_names)} | " + " | ".join(cells) + " |")
    for row in SUMMARY_ROWS:
        cells = [_cell(summaries[m][row]) for m in methods]
        lines.append(f"| **{row}** | | " + " | ".join(cells) + " |")
    lines += ["", "Per (pattern, missing sequence) pair:", "",
              "| pattern | missing | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
    for pattern in patterns:
        missing = [name for name, flag in zip(channel_names, parse_pattern(pattern)) if not flag]
        for name in missing:
            cells = [_cell(summaries[m]["pairs"].get(pattern, {}).get(name)) for m in methods]
            lines.append(f"| {pattern} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def summary_rows(summary: dict[str, dict[str, dict[str, dict[str, Any]]]]) -> list[dict[str, Any]]:
    """Flatten :func:`summarise` output into CSV rows (one per protocol, region, method and table row)."""
    rows = []
    for protocol, regions in summary.items():
        for region, methods in regions.items():
            for method, entry in methods.items():
                for pattern, values in entry["patterns"].items():
                    rows.append({"protocol": protocol, "region": region, "method": method, "row": pattern,
                                 **{m: values[m] for m in METRIC_NAMES}})
                for name in SUMMARY_ROWS:
                    if entry[name] is not None:
                        rows.append({"protocol": protocol, "region": region, "method": method, "row": name,
                                     **entry[name]})
    return rows


def write_csv(path: str | Path, rows: Sequence[dict[str, Any]]) -> None:
    """Write dict rows as CSV atomically (columns = union of keys, in first-seen order)."""
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    with atomic_path(path) as temp:
        with open(temp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
