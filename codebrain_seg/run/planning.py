"""``codebrain_plan_and_preprocess`` as users run it: plan and preprocess, then size the CPU configuration on this
machine (measured step costs) and, when asked, for a time budget.

:func:`planners.plan_and_preprocess.plan_and_preprocess` plans from the fingerprint alone (the analytic CPU estimate,
what offline planning and the tests use). This function adds what needs the trainers: a few real training steps of
the CPU ladder's candidates at the planned crop on the preprocessed data (``trainers.step_timing``, cached per
machine), from which ``2d_cpu``'s network, iterations and validation cadence are sized again
(``planners.sizing``). A time budget changes only those fields, so it never touches the preprocessed arrays.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from codebrain_seg.errors import InputError
from codebrain_seg.io import read_json, write_json
from codebrain_seg.plans import PLANS_NAME, check_plans
from planners.experiment_planner import plan_experiment, validation_slices_per_case
from planners.plan_and_preprocess import load_plans
from planners.plan_and_preprocess import plan_and_preprocess as plan_from_fingerprint
from trainers.options import TrainingOptions
from trainers.step_timing import machine_key, measured_step_costs

logger = logging.getLogger(__name__)

CPU_CONFIGURATION = "2d_cpu"


def size_cpu_configuration_here(preprocessed_dir: Path, time_budget_minutes: float | None = None,
                                benchmark: bool = True, fold: int = 0) -> dict[str, Any] | None:
    """Size ``2d_cpu`` of a planned dataset again from this machine's measured step costs (``benchmark``; else the
    analytic estimate) for half an hour per stage or ``time_budget_minutes`` of training in all; returns its
    ``timing`` block (None for datasets without ``2d_cpu``, e.g. cardiac ones). Measured plans for the same
    machine and budget are kept as they are."""
    plans = load_plans(preprocessed_dir)
    configuration = plans["configurations"].get(CPU_CONFIGURATION)
    if configuration is None:
        return None
    machine = machine_key("cpu") if benchmark else "analytic"
    timing = configuration.get("timing") or {}
    if timing.get("machine") == machine and timing.get("budget_minutes") == time_budget_minutes:
        return timing
    fingerprint = read_json(preprocessed_dir / "dataset_fingerprint.json")
    splits = read_json(preprocessed_dir / "splits_final.json")
    split = splits[min(fold, len(splits) - 1)]
    validation_slices = max(1, len(split["val"])) * validation_slices_per_case(
        fingerprint, int(configuration["slicing_axis"]), TrainingOptions.max_val_slices_per_case)
    costs = None
    if benchmark:
        data_folder = preprocessed_dir / configuration["data_identifier"]
        data = (data_folder, split["train"]) if data_folder.is_dir() else None
        logger.info("timing training steps of the CPU configuration's candidates on this machine (%s) ...", machine)
        costs = measured_step_costs(plans, CPU_CONFIGURATION, "cpu", data)
    replanned = plan_experiment(fingerprint, plans["dataset_name"], step_costs=costs,
                                time_budget_minutes=time_budget_minutes, validation_slices=validation_slices)
    sized = replanned["configurations"][CPU_CONFIGURATION]
    sized["timing"]["machine"] = machine
    plans["configurations"][CPU_CONFIGURATION] = {**configuration, **{
        key: sized[key] for key in ("network", "batch_size", "optimisation", "timing")}}
    plans["configurations"][CPU_CONFIGURATION]["reasons"] = {**configuration.get("reasons", {}),
                                                             **sized["reasons"]}
    path = preprocessed_dir / f"{PLANS_NAME}.json"
    check_plans(plans, str(path))
    write_json(path, plans)
    stages = sized["timing"]
    logger.info("%s: network %s, %d iterations per stage, planned %.1f + %.1f minutes", CPU_CONFIGURATION,
                sized["network"], sized["optimisation"]["stage1"]["iterations"],
                stages["stage1"]["planned_seconds"] / 60, stages["stage2"]["planned_seconds"] / 60)
    return sized["timing"]


def plan_and_preprocess(dataset: str | int, configurations: Sequence[str] | None = None,
                        gpu_memory_gb: float = 24.0, num_processes: int = 1, verify: bool = True,
                        replan: bool = False, benchmark: bool = True,
                        time_budget_minutes: float | None = None) -> Path:
    """The whole ``codebrain_plan_and_preprocess`` stage; returns the preprocessed dataset folder.

    Args:
        dataset, configurations, gpu_memory_gb, num_processes, verify, replan: see
            :func:`planners.plan_and_preprocess.plan_and_preprocess`.
        benchmark: time real training steps on this machine to size ``2d_cpu`` (False: the analytic estimate).
        time_budget_minutes: training minutes in all (both stages, validation included) ``2d_cpu`` is sized for;
            None: about half an hour per stage.
    """
    if time_budget_minutes is not None and (isinstance(time_budget_minutes, bool)
                                            or not isinstance(time_budget_minutes, (int, float))
                                            or not 1 <= time_budget_minutes <= 100_000):
        raise InputError(f"--time-budget must be a number of minutes between 1 and 100000, got "
                         f"{time_budget_minutes!r}")
    out = plan_from_fingerprint(dataset, configurations, gpu_memory_gb=gpu_memory_gb, num_processes=num_processes,
                                verify=verify, replan=replan)
    if benchmark or time_budget_minutes is not None:
        size_cpu_configuration_here(out, time_budget_minutes, benchmark)
    return out
