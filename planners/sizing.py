"""Sizing the CPU configuration from the cost of a training step on this machine, optionally for a time budget.

The planner does not assume a machine: it asks a *step-cost function* what one iteration, one validated slice and
one checkpoint of each stage cost for a candidate network, and sizes the network, the iterations and the validation
cadence from the answers. Two step-cost functions exist: :func:`analytic_step_costs` (FLOPs at an assumed
throughput; offline planning, tests) and the measured one of ``trainers.step_timing`` (a few real training steps on
this machine, cached), which ``codebrain_seg.run.planning`` passes in. Every planned stage records its predicted
seconds, so ``benchmarks/bench_planning.py`` can compare them with the measured training time.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from planners.budget import NetworkSize, training_flops_per_slice

# Effective training throughput assumed by the analytic estimate: about what the reference network reaches on 2 cores
# (0.12 slices/s at 240x240 ~ 770 GFLOP per slice). Measured plans replace it.
CPU_EFFECTIVE_GFLOPS = 60.0
# Stage I validation decodes every single-missing pattern of a slice: about the forward share of 4 training slices.
_VALIDATION_SLICE_OVER_TRAINING_SLICE = 4 / 3
# Process start, network construction and the data loader's start per stage, seconds (measured: 5-15 s on 2 cores).
STAGE_START_SECONDS = 10.0
# Without a time budget each stage gets this long and at least this many iterations (the 2d_cpu promise).
CPU_SECONDS_PER_STAGE = 1800.0
CPU_MIN_ITERATIONS = 1000
# With a time budget: the iterations per stage below which a larger network is not worth its cost. Measured on the
# real cases (fold 0, 45 minutes on a 2-core AVX512-BF16 CPU, docs/results/real_data.md): 16/32/32/2 at 900 + 900
# iterations scored 0.22 dB more held-out T1Gd PSNR than 8/16/16/1 at 2,300 + 2,300 in the same minutes, while
# 300 + 300 iterations of a larger network were 1 dB behind. On a faster day of the same CPU 8/16/16/1 at 2,800,
# 16/32/32/2 at 1,900 and 16/48/48/3 at 1,000 iterations tied on held-out T1Gd (18.58-18.61 dB), but 16/32/32/2
# led Stage II's validation over every missing pattern (19.99 dB, 16/48/48/3 18.89; 8/16/16/1 18.86 at 2,300):
# the floor sits where it picks that middle ground.
BUDGET_MIN_ITERATIONS = 1500
# With a budget, validation only picks the better checkpoint and costs more per slice than a training step (it
# decodes every single-missing pattern; 0.64 s per slice against 0.58 for training on the real cases, one thread):
# five validations of 96 slices took a quarter of a 45-minute budget, so a budgeted stage validates twice.
VALIDATIONS_PER_STAGE = 2
MAX_ITERATIONS = 20_000


@dataclass(frozen=True)
class StageCost:
    """Seconds of one stage's pieces: a training iteration (data included), a validated slice, a checkpoint write."""

    seconds_per_iteration: float
    validation_seconds_per_slice: float
    checkpoint_seconds: float

    def as_dict(self) -> dict[str, float]:
        """Plain dict for the plans file."""
        return {"seconds_per_iteration": round(self.seconds_per_iteration, 4),
                "validation_seconds_per_slice": round(self.validation_seconds_per_slice, 4),
                "checkpoint_seconds": round(self.checkpoint_seconds, 3)}


@dataclass(frozen=True)
class StepCosts:
    """The cost of both stages of a candidate network; ``source`` says how it was obtained."""

    stage1: StageCost
    stage2: StageCost
    source: str

    def stage(self, number: int) -> StageCost:
        """The cost of stage 1 or 2."""
        return self.stage1 if number == 1 else self.stage2

    @classmethod
    def from_timing(cls, timing: dict[str, Any]) -> "StepCosts":
        """The costs a plans' ``timing`` block (:meth:`SizedConfiguration.timing`) recorded for its network."""
        def stage(block: dict[str, Any]) -> StageCost:
            return StageCost(float(block["seconds_per_iteration"]), float(block["validation_seconds_per_slice"]),
                             float(block["checkpoint_seconds"]))
        return cls(stage(timing["stage1"]), stage(timing["stage2"]), str(timing["source"]))


# (network, Stage I batch size) -> costs. Stage II runs at twice the Stage I batch (the plans' optimisation block).
StepCostFunction = Callable[[NetworkSize, int], StepCosts]


def analytic_step_costs(crop: Sequence[int], channels: int,
                        gflops: float = CPU_EFFECTIVE_GFLOPS) -> StepCostFunction:
    """Costs from the FLOP estimate of :mod:`planners.budget` at ``gflops``; Stage II is counted as a third of a
    Stage I step (one encoder trained, the posterior encoder only forward) and checkpoints as free."""
    pixels = int(crop[0]) * int(crop[1])

    def costs(size: NetworkSize, batch_size: int) -> StepCosts:
        per_slice = training_flops_per_slice(size, pixels, channels) / (gflops * 1e9)
        stage1 = StageCost(per_slice * batch_size, per_slice * _VALIDATION_SLICE_OVER_TRAINING_SLICE / 3, 0.0)
        stage2 = StageCost(per_slice * 2 * batch_size / 3, per_slice * _VALIDATION_SLICE_OVER_TRAINING_SLICE / 3, 0.0)
        return StepCosts(stage1, stage2, f"analytic: FLOPs at an assumed {gflops:g} GFLOP/s")

    return costs


def default_save_every(iterations: int, val_every: int) -> int:
    """How often ``checkpoint_latest.pth`` is written (the trainer's rule, kept here so plans predict it)."""
    return min(val_every, max(50, iterations // 50))


def planned_stage_seconds(cost: StageCost, iterations: int, val_every: int, validation_slices: int) -> float:
    """Predicted wall seconds of one stage: start, iterations, validations, checkpoint writes (latest, best, final)."""
    validations = math.ceil(iterations / val_every)
    saves = (iterations - 1) // default_save_every(iterations, val_every) + validations + 2
    return (STAGE_START_SECONDS + iterations * cost.seconds_per_iteration
            + validations * validation_slices * cost.validation_seconds_per_slice + saves * cost.checkpoint_seconds)


@dataclass(frozen=True)
class SizedConfiguration:
    """What the CPU configuration's sizing decided, with the evidence."""

    network: NetworkSize
    iterations: int
    val_every: int
    costs: StepCosts
    planned_seconds: tuple[float, float]
    reason: str
    candidates: list[dict[str, Any]]

    def timing(self, batch_size: int, validation_slices: int, budget_minutes: float | None) -> dict[str, Any]:
        """The plans' ``timing`` block: predicted seconds per stage and the costs they come from."""
        return {"source": self.costs.source, "budget_minutes": budget_minutes, "batch_size": batch_size,
                "validation_slices": validation_slices,
                "stage1": {**self.costs.stage1.as_dict(), "planned_seconds": round(self.planned_seconds[0], 1)},
                "stage2": {**self.costs.stage2.as_dict(), "planned_seconds": round(self.planned_seconds[1], 1)},
                "candidates": self.candidates}


def _round_iterations(iterations: float) -> int:
    return int(min(max(iterations, 100), MAX_ITERATIONS) // 50 * 50)


def _fit_iterations(costs: StepCosts, seconds: float, validation_slices: int, stages: Sequence[int]) -> int:
    """Most iterations (the same for each of ``stages``) whose planned seconds fit in ``seconds``."""
    low, high = 1, MAX_ITERATIONS
    while low < high:  # planned seconds grow with the iterations: bisect
        middle = (low + high + 1) // 2
        val_every = max(1, middle // VALIDATIONS_PER_STAGE)
        total = sum(planned_stage_seconds(costs.stage(s), middle, val_every, validation_slices) for s in stages)
        low, high = (middle, high) if total <= seconds else (low, middle - 1)
    return low


@dataclass(frozen=True)
class BudgetSchedule:
    """Iterations per stage (the same for both stages), validation cadence and planned seconds of each stage."""

    iterations: int
    val_every: int
    planned_seconds: tuple[float, float]


def budget_schedule(costs: StepCosts, budget_minutes: float, validation_slices: int) -> BudgetSchedule:
    """The schedule that fills ``budget_minutes`` of training of both stages (validations and checkpoints included)
    for a network of these ``costs``: the most iterations that fit, validated ``VALIDATIONS_PER_STAGE`` times per
    stage. ``size_cpu_configuration`` applies it to the network it picks; ``benchmarks/bench_planning.py`` to
    today's default network, to compare the two at the same minutes."""
    iterations = _round_iterations(_fit_iterations(costs, 60.0 * budget_minutes, validation_slices, (1, 2)))
    val_every = max(1, iterations // VALIDATIONS_PER_STAGE)
    planned = tuple(planned_stage_seconds(costs.stage(s), iterations, val_every, validation_slices) for s in (1, 2))
    return BudgetSchedule(iterations, val_every, planned)  # type: ignore[arg-type]


def size_cpu_configuration(ladder: Sequence[NetworkSize], batch_size: int, validation_slices: int,
                           step_costs: StepCostFunction, budget_minutes: float | None = None) -> SizedConfiguration:
    """Network, iterations per stage and validation cadence of the CPU configuration.

    Without a budget: the largest network of ``ladder`` whose Stage I runs >= ``CPU_MIN_ITERATIONS`` iterations in
    ``CPU_SECONDS_PER_STAGE`` (validation included), iterations filling that time. With ``budget_minutes`` (both
    stages, validations and checkpoints included): the largest network that still gets ``BUDGET_MIN_ITERATIONS``
    iterations per stage, both stages the same iterations (as the reference trains), else the one that gets the most.
    Candidates are measured smallest first and the search stops at the first that no longer fits, so a slow machine
    does not time the paper network. ``validation_slices`` is the number of slices one validation scores.
    """
    if budget_minutes is None:
        seconds, stages, floor = CPU_SECONDS_PER_STAGE, (1,), CPU_MIN_ITERATIONS
    else:
        seconds, stages, floor = 60.0 * budget_minutes, (1, 2), BUDGET_MIN_ITERATIONS
    candidates, fitted = [], []
    for size in ladder:
        costs = step_costs(size, batch_size)
        iterations = _fit_iterations(costs, seconds, validation_slices, stages)
        candidates.append({"network": size.as_dict(), "iterations": iterations,
                           "stage1_seconds_per_iteration": round(costs.stage1.seconds_per_iteration, 4),
                           "stage2_seconds_per_iteration": round(costs.stage2.seconds_per_iteration, 4)})
        fitted.append((size, iterations, costs))
        if iterations < floor:
            break
    fitting = [entry for entry in fitted if entry[1] >= floor]
    size, iterations, costs = fitting[-1] if fitting else max(fitted, key=lambda entry: entry[1])
    if budget_minutes is not None:
        schedule = budget_schedule(costs, budget_minutes, validation_slices)
        iterations, val_every, planned = schedule.iterations, schedule.val_every, schedule.planned_seconds
    else:
        iterations = _round_iterations(iterations)
        val_every = max(1, min(10_000, iterations // 10))
        planned = tuple(planned_stage_seconds(costs.stage(s), iterations, val_every, validation_slices)
                        for s in (1, 2))
    what = (f"a budget of {budget_minutes:g} minutes for both stages (validation and checkpoints included): the "
            f"largest network of the ladder that still trains >= {floor} iterations per stage (below that, iterations "
            "buy more quality than width), both stages the same iterations, validation "
            f"{VALIDATIONS_PER_STAGE} times per stage" if budget_minutes is not None else
            f"the largest network of the ladder that trains >= {floor} Stage I iterations within "
            f"{seconds:.0f} s (validation included); iterations fill that time")
    reason = (f"{what}; step costs {costs.source}: Stage I {costs.stage1.seconds_per_iteration:.3f} s/iteration, "
              f"Stage II {costs.stage2.seconds_per_iteration:.3f} s/iteration at batch {batch_size}; planned "
              f"{planned[0] / 60:.1f} + {planned[1] / 60:.1f} minutes; candidates (network: iterations): "
              + ", ".join(f"{c['network']['posterior_width']}/{c['network']['common_width']}/"
                          f"{c['network']['decoder_width']}/{c['network']['depth']}: {c['iterations']}"
                          for c in candidates))
    return SizedConfiguration(size, iterations, val_every, costs, planned, reason, candidates)
