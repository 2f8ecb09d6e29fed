"""codebrain_plan_and_preprocess as users run it: 2d_cpu sized from this machine's step costs and a time budget."""
from __future__ import annotations

import pytest

import codebrain_seg.run.planning as planning
from codebrain_seg.cli.plan_and_preprocess import main as plan_main
from codebrain_seg.demo_data import make_demo_dataset
from codebrain_seg.errors import InputError
from codebrain_seg.io import read_json
from planners.budget import NetworkSize
from planners.sizing import BUDGET_MIN_ITERATIONS, VALIDATIONS_PER_STAGE, StageCost, StepCosts


def fake_measured(asked: list):
    """A stand-in for trainers.step_timing.measured_step_costs: Stage I costs 0.01 s per channel of width."""

    def factory(plans, configuration, device="cpu", data=None, cache=None):
        asked.append(("factory", data is not None))

        def costs(size: NetworkSize, batch_size: int) -> StepCosts:
            asked.append(size.common_width)
            step = 0.01 * size.common_width
            return StepCosts(StageCost(step, 0.001, 0.01), StageCost(step / 2, 0.001, 0.01), "measured (fake)")

        return costs

    return factory


@pytest.fixture
def demo_dataset(project_dirs):
    make_demo_dataset(995, num_cases=5, shape=(40, 40, 16))
    return 995


def test_budget_resizes_only_the_cpu_configuration_and_keeps_the_arrays(demo_dataset, monkeypatch):
    asked: list = []
    monkeypatch.setattr(planning, "measured_step_costs", fake_measured(asked))
    out = planning.plan_and_preprocess(demo_dataset, ["2d_cpu"])
    plans = read_json(out / "codebrainPlans.json")
    arrays = sorted(p.stat().st_mtime_ns for p in (out / plans["configurations"]["2d_cpu"]["data_identifier"]).iterdir())
    timing = plans["configurations"]["2d_cpu"]["timing"]
    assert timing["source"] == "measured (fake)" and timing["budget_minutes"] is None
    assert asked[0] == ("factory", True)  # the preprocessed data is there: its loader is timed too

    out = planning.plan_and_preprocess(demo_dataset, ["2d_cpu"], time_budget_minutes=30)
    budgeted = read_json(out / "codebrainPlans.json")
    cpu = budgeted["configurations"]["2d_cpu"]
    assert cpu["timing"]["budget_minutes"] == 30
    assert cpu["optimisation"]["stage1"]["iterations"] >= BUDGET_MIN_ITERATIONS
    assert cpu["optimisation"]["stage1"]["iterations"] == cpu["optimisation"]["stage2"]["iterations"]
    assert cpu["optimisation"]["stage1"]["val_every"] == cpu["optimisation"]["stage1"]["iterations"] // VALIDATIONS_PER_STAGE
    planned = cpu["timing"]["stage1"]["planned_seconds"] + cpu["timing"]["stage2"]["planned_seconds"]
    assert 0.9 * 30 * 60 <= planned <= 30 * 60
    assert budgeted["configurations"]["2d"] == plans["configurations"]["2d"]  # nothing else changes
    assert sorted(p.stat().st_mtime_ns for p in (out / cpu["data_identifier"]).iterdir()) == arrays

    asked.clear()
    planning.plan_and_preprocess(demo_dataset, ["2d_cpu"], time_budget_minutes=30)
    assert read_json(out / "codebrainPlans.json") == budgeted  # same machine and budget: kept, not re-measured
    assert asked == []


def test_no_benchmark_plans_from_the_analytic_estimate(demo_dataset, monkeypatch):
    monkeypatch.setattr(planning, "measured_step_costs", lambda *a, **k: pytest.fail("must not measure"))
    out = planning.plan_and_preprocess(demo_dataset, ["2d_cpu"], benchmark=False, time_budget_minutes=10)
    timing = read_json(out / "codebrainPlans.json")["configurations"]["2d_cpu"]["timing"]
    assert timing["source"].startswith("analytic") and timing["budget_minutes"] == 10


@pytest.mark.parametrize("budget", [0, -5, True, "45"])
def test_a_bad_budget_is_refused_before_any_work(budget, project_dirs):
    with pytest.raises(InputError, match="--time-budget"):
        planning.plan_and_preprocess(1, time_budget_minutes=budget)


def test_cli_refuses_a_bad_budget_in_one_line(demo_dataset, capsys):
    assert plan_main(["-d", str(demo_dataset), "--time-budget", "0", "--no-benchmark"]) == 2
    err = capsys.readouterr().err
    assert "--time-budget must be a number of minutes" in err and "Traceback" not in err
