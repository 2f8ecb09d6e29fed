"""evaluation/ablation/verdicts.py: the seed-aware verdict rule on the papers' orderings."""
from __future__ import annotations

import pytest

from evaluation.ablation.verdicts import (
    NO,
    TIE_DB,
    UNRESOLVED,
    YES,
    ArmScore,
    arm_score,
    claim_verdict,
    order_verdict,
)


def test_arm_score_is_the_mean_and_sample_sd_over_seeds() -> None:
    one = arm_score([30.123456789])
    assert one == ArmScore(30.123456789, None, 1)  # one seed: today's figure bit for bit, spread unknown
    three = arm_score([29.0, 30.0, 31.0])
    assert (three.mean, three.spread, three.seeds) == (30.0, 1.0, 3)  # n - 1 in the denominator
    with pytest.raises(ValueError, match="at least one seed"):
        arm_score([])


def test_a_gap_inside_the_spread_is_not_resolved_and_outside_it_is_decided() -> None:
    base = ArmScore(30.0, 0.1, 3)
    decided = order_verdict(ArmScore(30.3, 0.2, 3), base)
    assert decided == {"verdict": YES, "single_seed": False, "margin_db": pytest.approx(0.3),
                       "threshold_db": 0.2, "tie": False}  # the larger SD of the two arms
    assert order_verdict(base, ArmScore(30.3, 0.2, 3))["verdict"] == NO
    inside = order_verdict(ArmScore(30.15, 0.2, 3), base)
    assert inside["verdict"] == UNRESOLVED and inside["threshold_db"] == 0.2
    # a >= claim inside the spread is not resolved either: a tie cannot be told from a small loss
    assert order_verdict(ArmScore(29.95, 0.2, 3), base, strict=False)["verdict"] == UNRESOLVED
    # seeds that agree closely still do not decide by hundredths of a dB: the single-seed tie margin is a floor
    close = order_verdict(ArmScore(30.08, 0.01, 4), ArmScore(30.0, 0.02, 4))
    assert close["verdict"] == UNRESOLVED and close["threshold_db"] == TIE_DB and close["tie"]
    assert order_verdict(ArmScore(30.5, 0.01, 2), ArmScore(30.0, 0.02, 2))["verdict"] == YES


def test_a_single_seed_keeps_todays_rule_and_says_so() -> None:
    near = order_verdict(ArmScore(30.05, None, 1), ArmScore(30.0, None, 1))
    assert near == {"verdict": YES, "single_seed": True, "margin_db": pytest.approx(0.05), "threshold_db": TIE_DB,
                    "tie": True}  # decided by the ordering, flagged as a tie under 0.1 dB
    far = order_verdict(ArmScore(29.0, None, 1), ArmScore(30.0, None, 1))
    assert (far["verdict"], far["single_seed"], far["tie"]) == (NO, True, False)
    equal = ArmScore(30.0, None, 1)
    assert order_verdict(equal, equal)["verdict"] == NO and order_verdict(equal, equal, strict=False)["verdict"] == YES
    # an arm with one seed makes the comparison single-seed even if the other has several
    assert order_verdict(ArmScore(30.05, 0.5, 3), equal)["single_seed"] is True


def test_a_claim_over_several_arms_needs_every_ordering() -> None:
    arms = {"best": ArmScore(31.0, 0.1, 3), "far": ArmScore(30.0, 0.1, 3), "near": ArmScore(30.95, 0.1, 3),
            "above": ArmScore(32.0, 0.1, 3)}
    assert claim_verdict(arms, "best", ["far"])["verdict"] == YES
    mixed = claim_verdict(arms, "best", ["far", "near"])
    assert mixed["verdict"] == UNRESOLVED and mixed["pairs"]["far"]["verdict"] == YES
    assert mixed["margin_db"] == pytest.approx(0.05) and mixed["held"] is True and mixed["seeds"] == 3
    assert claim_verdict(arms, "best", ["far", "near", "above"])["verdict"] == NO
    missing = claim_verdict({**arms, "far": None}, "best", ["far"])
    assert missing["verdict"] is None and missing["held"] is None
