"""Whether a paper's ordering of ablation arms holds on these numbers: the seed-aware verdict rule.

One arm is a setting trained with N seeds and scored on the same cases; its figure is the **mean** over seeds of
the mean PSNR over (pattern, missing sequence) pairs, its **spread** the sample standard deviation over seeds
(unknown with one seed). An ordering "a > b" (or "a >= b") is:

* with N >= 2 seeds per arm: **decided** only when the gap ``|mean_a - mean_b|`` exceeds the threshold
  ``max(sd_a, sd_b, TIE_DB)``: "yes" if ``mean_a`` is the larger, "no" otherwise; inside the threshold it is
  **"not resolved at this budget"** (more seeds, iterations or cases could still decide it), for ">=" claims
  too, since a gap inside the spread cannot tell a tie from a small loss;
* with a single seed: today's rule, marked single-seed: the ordering of the two figures decides ("yes" / "no"),
  and a gap under :data:`TIE_DB` is flagged as a tie at this precision.

Why the larger standard deviation and not the standard error of the difference
(``sqrt(sd_a^2 / n_a + sd_b^2 / n_b)``): the question the papers' single-run tables answer is whether *a
training run* of one arm beats one of the other, and the seed-to-seed standard deviation is the scale of that
run-to-run noise; the standard error shrinks with N and answers whether the *means* differ, which an expensive
budget can make true for gaps no single run would show. With the 2-3 seeds a CPU budget allows, the standard
error is also poorly estimated (a t-test at 2 degrees of freedom needs ~4.3 SE for 95 %), while "the gap exceeds
either arm's own spread" stays readable. The :data:`TIE_DB` floor keeps the single-seed tie margin: arms whose
seeds happen to agree closely are still not told apart by hundredths of a dB of a few evaluation cases.

A claim with several worse arms ("(20, 5) is the best pair") holds when every pairwise ordering holds: "no" if
any is decided "no", "yes" if all are "yes", else "not resolved at this budget".
"""
from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

YES = "yes"
NO = "no"
UNRESOLVED = "not resolved at this budget"
VERDICTS = (YES, NO, UNRESOLVED)
# A gap below this PSNR margin never decides an ordering: the papers' own ablation gaps are 0.26 dB and more, and a
# few evaluation cases do not resolve differences of hundredths of a dB.
TIE_DB = 0.1


@dataclass(frozen=True)
class ArmScore:
    """One arm's figure: ``mean`` over ``seeds`` seeds and the sample standard deviation ``spread`` (None if 1)."""

    mean: float
    spread: float | None
    seeds: int


def arm_score(values: Sequence[float]) -> ArmScore:
    """The mean and sample standard deviation (``n - 1``; None for one value) of an arm's per-seed figures.

    Raises:
        ValueError: no value.
    """
    values = [float(v) for v in values]
    if not values:
        raise ValueError("an arm needs at least one seed's figure")
    # fmean of one value is that value exactly, so a single seed reports today's figure bit for bit.
    spread = statistics.stdev(values) if len(values) > 1 else None
    return ArmScore(statistics.fmean(values), spread, len(values))


def order_verdict(better: ArmScore, worse: ArmScore, strict: bool = True) -> dict[str, Any]:
    """The verdict on "``better`` > ``worse``" (``strict``) or ">=" (module docstring for the rule and why).

    Returns:
        ``{"verdict": "yes" | "no" | "not resolved at this budget", "single_seed": bool, "margin_db":
        better - worse, "threshold_db": the gap needed to decide (single seed: TIE_DB, which only flags a tie),
        "tie": gap under TIE_DB}``.
    """
    margin = better.mean - worse.mean
    tie = abs(margin) < TIE_DB
    if min(better.seeds, worse.seeds) < 2 or better.spread is None or worse.spread is None:
        held = margin > 0 if strict else margin >= 0
        return {"verdict": YES if held else NO, "single_seed": True, "margin_db": margin, "threshold_db": TIE_DB,
                "tie": tie}
    threshold = max(better.spread, worse.spread, TIE_DB)
    verdict = YES if margin > threshold else NO if margin < -threshold else UNRESOLVED
    return {"verdict": verdict, "single_seed": False, "margin_db": margin, "threshold_db": threshold, "tie": tie}


def claim_verdict(arms: Mapping[str, ArmScore | None], better: str, worse: Sequence[str],
                  strict: bool = True) -> dict[str, Any]:
    """The verdict on a claim "``better`` beats each of ``worse``" from the arms' scores.

    Returns:
        ``{"verdict": one of VERDICTS or None (an arm has no score), "held": the ordering of the means (today's
        single-seed verdict) or None, "margin_db": better - the best of worse, "threshold_db", "single_seed",
        "tie", "seeds": the fewest seeds of an arm, "pairs": {worse label: order_verdict}}``.
    """
    if any(arms.get(label) is None for label in (better, *worse)):
        return {"verdict": None, "held": None, "margin_db": None, "threshold_db": None, "single_seed": None,
                "tie": False, "seeds": None, "pairs": {}}
    top = arms[better]
    pairs = {label: order_verdict(top, arms[label], strict) for label in worse}  # type: ignore[arg-type]
    verdicts = [pair["verdict"] for pair in pairs.values()]
    verdict = NO if NO in verdicts else YES if all(v == YES for v in verdicts) else UNRESOLVED
    closest = max(worse, key=lambda label: arms[label].mean)  # type: ignore[union-attr]
    margin = pairs[closest]["margin_db"]
    held = all(top.mean > arms[w].mean if strict else top.mean >= arms[w].mean for w in worse)  # type: ignore
    seeds = min(arms[label].seeds for label in (better, *worse))  # type: ignore[union-attr]
    return {"verdict": verdict, "held": held, "margin_db": margin, "threshold_db": pairs[closest]["threshold_db"],
            "single_seed": any(pair["single_seed"] for pair in pairs.values()), "tie": abs(margin) < TIE_DB,
            "seeds": seeds, "pairs": pairs}

