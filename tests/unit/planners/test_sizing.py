"""Sizing the CPU configuration from step costs: the budget rule, the stopping rule and the planned seconds."""
from __future__ import annotations

import pytest

from planners.budget import NetworkSize
from planners.sizing import (
    BUDGET_MIN_ITERATIONS,
    CPU_MIN_ITERATIONS,
    CPU_SECONDS_PER_STAGE,
    STAGE_START_SECONDS,
    VALIDATIONS_PER_STAGE,
    StageCost,
    StepCosts,
    analytic_step_costs,
    budget_schedule,
    planned_stage_seconds,
    size_cpu_configuration,
)

LADDER = [NetworkSize(8, 16, 16, 1), NetworkSize(16, 24, 24, 2), NetworkSize(16, 32, 32, 2), NetworkSize(32, 64, 64, 4)]


def fake_costs(per_width: dict[int, float], asked: list[int]):
    """Stage I costs ``per_width[common_width]`` s/iteration, Stage II half of it; records what was asked."""

    def costs(size: NetworkSize, batch_size: int) -> StepCosts:
        asked.append(size.common_width)
        step = per_width[size.common_width]
        return StepCosts(StageCost(step, 0.01, 0.1), StageCost(step / 2, 0.02, 0.05), "fake")

    return costs


def test_planned_seconds_count_start_iterations_validations_and_checkpoints():
    cost = StageCost(seconds_per_iteration=0.5, validation_seconds_per_slice=0.1, checkpoint_seconds=2.0)
    # 1000 iterations, validation every 200 (5 validations of 10 slices), latest every 50 (19) + 5 best + 2 final
    expected = STAGE_START_SECONDS + 1000 * 0.5 + 5 * 10 * 0.1 + (19 + 5 + 2) * 2.0
    assert planned_stage_seconds(cost, 1000, 200, 10) == pytest.approx(expected)


def test_budget_picks_the_largest_network_that_still_gets_the_minimum_iterations():
    asked: list[int] = []
    # 45 minutes for both stages: width 24 gets (2700 - overheads) / 0.9 ~ 2900 iterations, width 32 ~ 1150
    sized = size_cpu_configuration(LADDER, 4, 20, fake_costs({16: 0.4, 24: 0.6, 32: 1.5, 64: 3.0}, asked),
                                   budget_minutes=45)
    assert sized.network == LADDER[1]
    assert sized.iterations >= BUDGET_MIN_ITERATIONS
    assert asked == [16, 24, 32]  # the first candidate that does not fit ends the search: 64 is never timed
    assert sized.val_every == sized.iterations // VALIDATIONS_PER_STAGE
    assert sum(sized.planned_seconds) <= 45 * 60
    assert sum(sized.planned_seconds) > 0.9 * 45 * 60  # the budget is used, not left idle
    assert "45 minutes" in sized.reason and "16/24/24/2" in sized.reason


def test_budget_too_small_for_any_candidate_takes_the_one_with_most_iterations():
    sized = size_cpu_configuration(LADDER, 4, 20, fake_costs({16: 0.4, 24: 0.6, 32: 1.0, 64: 3.0}, []),
                                   budget_minutes=5)
    assert sized.network == LADDER[0]
    assert 100 <= sized.iterations < BUDGET_MIN_ITERATIONS
    assert sum(sized.planned_seconds) <= 5 * 60


def test_without_budget_stage_one_fills_half_an_hour_with_at_least_the_cpu_minimum():
    sized = size_cpu_configuration(LADDER, 4, 20, fake_costs({16: 0.4, 24: 0.6, 32: 1.0, 64: 3.0}, []))
    assert sized.network == LADDER[2]  # 1.0 s/it: ~1700 iterations >= 1000; 3.0 s/it: ~560 < 1000
    assert sized.iterations >= CPU_MIN_ITERATIONS
    assert sized.planned_seconds[0] == pytest.approx(CPU_SECONDS_PER_STAGE, rel=0.05)
    assert sized.planned_seconds[1] < sized.planned_seconds[0]  # Stage II is cheaper per iteration


def test_timing_block_records_the_prediction_and_its_source():
    sized = size_cpu_configuration(LADDER, 4, 20, fake_costs({16: 0.4, 24: 0.6, 32: 1.5, 64: 3.0}, []),
                                   budget_minutes=45)
    timing = sized.timing(4, 20, 45)
    assert timing["source"] == "fake" and timing["budget_minutes"] == 45
    assert timing["stage1"]["planned_seconds"] == pytest.approx(sized.planned_seconds[0], abs=0.1)
    assert [c["network"]["common_width"] for c in timing["candidates"]] == [16, 24, 32]


def test_default_network_rescheduled_for_a_budget_from_its_recorded_timing():
    """bench_planning --default-network: the costs a plan recorded give back the schedule of that budget."""
    default = size_cpu_configuration(LADDER, 4, 20, fake_costs({16: 0.4, 24: 0.6, 32: 1.0, 64: 3.0}, []))
    costs = StepCosts.from_timing(default.timing(4, 20, None))
    assert costs.stage1.seconds_per_iteration == pytest.approx(1.0) and costs.source == "fake"
    schedule = budget_schedule(costs, 45, 20)
    assert schedule.val_every == schedule.iterations // VALIDATIONS_PER_STAGE
    assert 0.95 * 45 * 60 < sum(schedule.planned_seconds) <= 45 * 60
    # at 1.0 + 0.5 s per iteration pair, 45 minutes hold about 1,750 iterations of each stage
    assert 1650 <= schedule.iterations <= 1800


def test_analytic_costs_grow_with_the_network_and_the_batch():
    costs = analytic_step_costs([160, 192], 4)
    small, large = costs(LADDER[0], 4), costs(LADDER[-1], 4)
    assert large.stage1.seconds_per_iteration > small.stage1.seconds_per_iteration > 0
    assert costs(LADDER[0], 8).stage1.seconds_per_iteration == pytest.approx(
        2 * small.stage1.seconds_per_iteration)
    assert small.source.startswith("analytic")
