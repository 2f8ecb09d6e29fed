"""Planned versus measured training time of ``2d_cpu`` on this machine, and the held-out quality a time budget buys.

Plans a dataset as ``codebrain_plan_and_preprocess`` does (real training steps timed on this machine), trains both
stages of ``2d_cpu`` as planned, and prints per stage the planned seconds, the measured wall seconds and their ratio.
With ``--evaluate`` it then imputes T1Gd of every held-out case of the fold and prints the calibrated brain PSNR
(:func:`codebrain_seg.metrics.calibrated_brain_psnr`: ground truth scaled by its 0.5-99.5 brain percentiles,
prediction mapped by one least-squares affine fit over the brain, PSNR over brain voxels) of the final and the best
checkpoint, decoded as imputation does by default (expected levels), as the reference decodes (``count``), and
with test-time mirroring (``codebrain_impute --mirror``, about 4x the seconds).

With ``--default-network`` (and ``--time-budget``) it trains instead the network that the plan *without* a budget
picks (today's ``2d_cpu``) for the iterations that fill the same minutes at its measured costs: the budget's choice
and today's default side by side at the same training minutes (use another ``--workdir``).

Usage:
    python benchmarks/bench_planning.py --demo [--time-budget MINUTES] [--workdir DIR]
    python benchmarks/bench_planning.py --real [--time-budget 45] [--default-network] [--evaluate] [--workdir DIR]
        [--real-data DIR]

The dataset, plans, models and a record of the measured times live in ``--workdir`` (default: a folder under
``/tmp``), so a rerun reuses them: a stage that already finished is not timed again, its recorded time is printed.
One figure per line; training runs with the threads torch picks (all cores), so run nothing else beside it.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from codebrain_seg import paths  # noqa: E402
from codebrain_seg.converters.brats import convert_brats  # noqa: E402
from codebrain_seg.demo_data import make_demo_dataset  # noqa: E402
from codebrain_seg.inference.codebrain import CodeBrainPredictor  # noqa: E402
from codebrain_seg.io import read_json, read_nifti, write_json  # noqa: E402
from codebrain_seg.metrics import calibrated_brain_psnr  # noqa: E402
from codebrain_seg.raw_dataset import image_path  # noqa: E402
from codebrain_seg.run.planning import plan_and_preprocess  # noqa: E402
from codebrain_seg.run.training import run_training  # noqa: E402
from planners.sizing import BudgetSchedule, StepCosts, budget_schedule  # noqa: E402

CONFIGURATION = "2d_cpu"
DEMO_ID, REAL_ID = 990, 500
MISSING = "T1Gd"


def _dataset(args: argparse.Namespace) -> int:
    if args.demo:
        if not any(paths.raw_root().glob(f"Dataset{DEMO_ID:03d}_*")):
            make_demo_dataset(DEMO_ID)
        return DEMO_ID
    if not any(paths.raw_root().glob(f"Dataset{REAL_ID:03d}_*")):
        real = Path(args.real_data)
        if not real.is_dir():
            raise SystemExit(f"skipped: {real} not found")
        source = Path(args.workdir) / "source"
        source.mkdir(parents=True, exist_ok=True)
        for case in sorted(p.name for p in real.iterdir() if p.is_dir()):
            if not (source / case).exists():
                (source / case).symlink_to(real / case)
        convert_brats(source, REAL_ID, name="BraTSReal")
    return REAL_ID


def _train_timed(dataset: int, fold: int, record_path: Path,
                 schedule: BudgetSchedule | None = None) -> dict[str, float]:
    """Wall seconds of each stage (trained as planned, or on ``schedule``), measured now or recorded by the run that
    trained it."""
    override = {} if schedule is None else {"iterations": schedule.iterations, "val_every": schedule.val_every}
    record = read_json(record_path) if record_path.is_file() else {}
    for stage in ("1", "2"):
        if stage in record:
            continue
        start = time.perf_counter()
        run_training(dataset, fold, CONFIGURATION, stage=stage, device="cpu", **override)
        record[stage] = time.perf_counter() - start
        write_json(record_path, record)
    return record


# Inference settings scored: the default, the reference's decoding of the Stage II levels, test-time mirroring.
SETTINGS = {"": {}, "_count": {"code_decoding": "count"}, "_mirror": {"mirroring": True}}


def _evaluate(dataset: int, fold: int, preprocessed: Path) -> None:
    raw = paths.raw_dataset_dir(dataset)
    split = read_json(preprocessed / "splits_final.json")[fold]
    iterations = {}
    for checkpoint in ("final", "best"):
        predictor = CodeBrainPredictor.from_results(dataset, fold, CONFIGURATION, "cpu", checkpoint=checkpoint)
        iterations[checkpoint] = predictor.model_info["stage2_iteration"]
        if checkpoint == "best" and iterations["best"] == iterations["final"]:
            print(f"best checkpoint = final (Stage II iteration {iterations['final']})")
            continue
        missing = predictor.channel_names.index(MISSING)
        for suffix, options in SETTINGS.items():
            predictor.apply_options(options)
            scores = []
            for case in split["val"]:
                volumes = [read_nifti(image_path(raw, case, c)) for c in range(predictor.num_channels)]
                images = np.stack([v.data for v in volumes]).astype(np.float32)
                available = [c != missing for c in range(predictor.num_channels)]
                output = predictor.impute_arrays(images, available, volumes[0].affine)
                brain = np.any(images[np.asarray(available)] != 0, axis=0)
                scores.append(calibrated_brain_psnr(output[missing], images[missing], brain))
            every = ", ".join(f"{s:.2f}" for s in scores)
            print(f"heldout_{MISSING}_calibrated_brain_psnr_{checkpoint}{suffix}: {np.mean(scores):.2f} dB over "
                  f"{len(scores)} cases ({every})", flush=True)


def main() -> None:
    """Plan, train as planned, print planned vs measured seconds per stage (and the held-out PSNR)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--demo", action="store_true", help="the built-in phantom (codebrain_demo's data)")
    which.add_argument("--real", action="store_true", help="the real BraTS cases of --real-data")
    parser.add_argument("--time-budget", type=float, default=None, help="minutes of training in all")
    parser.add_argument("--default-network", action="store_true",
                        help="with --time-budget: train the network planned without a budget for those minutes")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--evaluate", action="store_true", help="held-out T1Gd calibrated brain PSNR")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--real-data", default=str(REPO.parent / "shared" / "data" / "real"))
    args = parser.parse_args()
    if args.default_network and args.time_budget is None:
        parser.error("--default-network needs --time-budget (the minutes to train it for)")
    args.workdir = args.workdir or f"/tmp/bench_planning_{'demo' if args.demo else 'real'}"
    for kind in ("raw", "preprocessed", "results"):
        os.environ[f"codebrain_{kind}"] = str(Path(args.workdir) / kind)
        Path(args.workdir, kind).mkdir(parents=True, exist_ok=True)
    print(f"load_average_1min_at_start: {os.getloadavg()[0]:.2f}")
    dataset = _dataset(args)
    start = time.perf_counter()
    preprocessed = plan_and_preprocess(dataset, [CONFIGURATION],
                                       time_budget_minutes=None if args.default_network else args.time_budget)
    print(f"planning_seconds (fingerprint, preprocessing and step timing; cached on a rerun): "
          f"{time.perf_counter() - start:.0f}")
    configuration = read_json(preprocessed / "codebrainPlans.json")["configurations"][CONFIGURATION]
    timing = configuration["timing"]
    print(f"plan: network {configuration['network']}, batch {configuration['batch_size']}, "
          f"{configuration['optimisation']['stage1']['iterations']} iterations per stage, validation every "
          f"{configuration['optimisation']['stage1'].get('val_every')}, budget {timing['budget_minutes']} min")
    print(f"plan_source: {timing['source']}")
    schedule = None
    if args.default_network:
        schedule = budget_schedule(StepCosts.from_timing(timing), args.time_budget, timing["validation_slices"])
        print(f"trained instead for the budget of {args.time_budget:g} min: {schedule.iterations} iterations per "
              f"stage, validation every {schedule.val_every}")
    measured = _train_timed(dataset, args.fold, Path(args.workdir) / f"measured_fold{args.fold}.json", schedule)
    for stage in ("1", "2"):
        planned = (timing[f"stage{stage}"]["planned_seconds"] if schedule is None
                   else schedule.planned_seconds[int(stage) - 1])
        print(f"stage{stage}_planned_seconds: {planned:.0f}")
        print(f"stage{stage}_measured_seconds: {measured[stage]:.0f}")
        print(f"stage{stage}_measured_over_planned: {measured[stage] / planned:.2f}")
    total = measured["1"] + measured["2"]
    print(f"training_minutes_in_all: {total / 60:.1f}")
    print(f"load_average_1min_after_training: {os.getloadavg()[0]:.2f}")
    if args.evaluate:
        _evaluate(dataset, args.fold, preprocessed)


if __name__ == "__main__":
    main()
