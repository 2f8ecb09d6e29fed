"""What a CodeBrain training stage costs on this machine: a few real steps of the real trainers, cached per machine.

The planner (``planners.sizing``) sizes the CPU configuration from step costs; this module measures them with the
trainers themselves, so the figure is the loop's: :class:`trainers.stage1.CodeBrainStageOneTrainer` and
:class:`trainers.stage2.CodeBrainStageTwoTrainer` are built for the candidate network on an empty split, their
``train_step`` is timed on a batch of the planned crop (the adversarial term on, as for 80 % of a run), their
``validate`` on one batch, a checkpoint write on disk, and, when the dataset is preprocessed, the data loader's batch
(augmentation included; on a CPU it runs in the training process). Figures are cached in
``$codebrain_preprocessed/machine_step_costs.json`` under a key of the machine (CPU model, cores, threads, torch
version), of the code that runs a step (the networks and trainers: a faster kernel makes old figures wrong) and of
the candidate, so planning again costs nothing.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

import codebrain_seg.networks as networks
from codebrain_seg import paths
from codebrain_seg.device import preferred_memory_format
from codebrain_seg.io import atomic_path
from planners.budget import NetworkSize
from planners.experiment_planner import _optimisation
from planners.sizing import StageCost, StepCostFunction, StepCosts
from trainers.data_loading import close_batches
from trainers.options import TrainingOptions, default_cpu_threads
from trainers.stage1 import CodeBrainStageOneTrainer
from trainers.stage2 import CodeBrainStageTwoTrainer

CACHE_NAME = "machine_step_costs.json"
TIMED_STEPS = 3
TIMED_BATCHES = 4


def machine_key(device: str) -> str:
    """The machine a measurement holds for: CPU model, cores, torch threads, torch version, device."""
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model} | {os.cpu_count()} cores | {default_cpu_threads()} threads | torch {torch.__version__} | {device}"


def code_fingerprint(folders: Sequence[Path] = (Path(networks.__file__).parent, Path(__file__).parent)) -> str:
    """A short hash of the sources a training step runs (by default ``codebrain_seg/networks`` and ``trainers``)."""
    digest = hashlib.sha256()
    for folder in folders:
        for source in sorted(Path(folder).glob("*.py")):
            digest.update(source.name.encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()[:12]


def _median_seconds(function: Callable[[], Any], repeats: int) -> float:
    function()  # warm-up: first-call allocations and one-off kernel selection
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def _time_trainer(trainer: Any, x: torch.Tensor, available: torch.Tensor, steps: int,
                  data: tuple[Path, Sequence[str]] | None) -> StageCost:
    trainer._setup()
    last = trainer.total_iterations - 1  # past the adversarial start: the full generator objective
    step = _median_seconds(lambda: trainer.train_step(x, available, last), steps)
    trainer.validation_batches = lambda: [x]  # one batch of the crop, instead of the dataset's slices
    validation = _median_seconds(trainer.validate, 1) / len(x)
    trainer.output_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = _median_seconds(lambda: trainer.save_checkpoint("checkpoint_final.pth"), 1)
    loading = 0.0
    if data is not None:
        trainer.data_folder, trainer.split = data[0], {"train": list(data[1]), "val": []}
        stream = trainer.training_stream()
        try:
            loading = _median_seconds(lambda: next(stream), TIMED_BATCHES)
        finally:
            close_batches(stream)
    return StageCost(step + loading, validation, checkpoint)


def measure_step_costs(plans: dict[str, Any], configuration: str, size: NetworkSize, batch_size: int,
                       device: str = "cpu", data: tuple[Path, Sequence[str]] | None = None,
                       steps: int = TIMED_STEPS) -> StepCosts:
    """Measured costs of both stages of ``size`` at ``batch_size`` (Stage II: twice that) on this machine.

    Args:
        plans: plans whose configuration ``configuration`` gives crop, FSQ levels and channels.
        size: the candidate network; batch_size: the Stage I batch.
        data: (preprocessed data folder, training case ids) to time the data loader too; None: steps only.
    """
    base = plans["configurations"][configuration]
    candidate = {**base, "network": size.as_dict(), "batch_size": batch_size,
                 "optimisation": {**base["optimisation"], **{k: v for k, v in _optimisation(1000, batch_size).items()
                                                             if k.startswith("stage")}}}
    plans = {**plans, "configurations": {configuration: candidate}}
    crop = [int(c) for c in candidate["crop_size"]]
    channels = len(plans["channel_names"])
    torch.manual_seed(0)
    # Timed with the count a one-process run uses, so the measurement, its cache key and the run agree.
    threads, caller_threads = default_cpu_threads(), torch.get_num_threads()
    with tempfile.TemporaryDirectory() as work:
        options = TrainingOptions(iterations=1000, device=device, compile=False, num_threads=threads)
        costs = []
        for number, trainer_class in ((1, CodeBrainStageOneTrainer), (2, CodeBrainStageTwoTrainer)):
            trainer = trainer_class(plans, configuration, Path(work), {"train": [], "val": []},
                                    Path(work) / f"stage{number}", options)
            x = torch.rand(trainer.batch_size, channels, *crop, device=trainer.device)
            x = x.contiguous(memory_format=trainer.memory_format)
            available = torch.ones(channels, dtype=torch.bool, device=trainer.device)
            available[channels // 2] = False
            try:
                costs.append(_time_trainer(trainer, x, available, steps, data))
            finally:
                torch.set_num_threads(caller_threads)  # the trainer's setup set the run's count
    return StepCosts(costs[0], costs[1], f"measured on this machine ({machine_key(device)}, {threads} threads: "
                                         f"median of {steps} real training steps per stage"
                                         f"{', data loading included' if data else ''})")


def measured_step_costs(plans: dict[str, Any], configuration: str, device: str = "cpu",
                        data: tuple[Path, Sequence[str]] | None = None,
                        cache: Path | None = None) -> StepCostFunction:
    """A step-cost function for :func:`planners.sizing.size_cpu_configuration` that measures each candidate once
    per machine (cache: ``$codebrain_preprocessed/machine_step_costs.json``)."""
    cache = cache or paths.preprocessed_root() / CACHE_NAME
    config = plans["configurations"][configuration]
    scope = {"machine": machine_key(device), "code": code_fingerprint(), "crop": config["crop_size"],
             "channels": plans["channel_names"], "data": str(data[0]) if data else None,
             "memory_format": str(preferred_memory_format(torch.device("cuda" if device == "cuda" else "cpu")))}

    def costs(size: NetworkSize, batch_size: int) -> StepCosts:
        key = json.dumps({**scope, "network": size.as_dict(), "batch_size": batch_size}, sort_keys=True)
        stored = json.loads(cache.read_text()) if cache.is_file() else {}
        if key in stored:
            entry = stored[key]
            return StepCosts(StageCost(**entry["stage1"]), StageCost(**entry["stage2"]), entry["source"])
        measured = measure_step_costs(plans, configuration, size, batch_size, device, data)
        stored[key] = {"stage1": vars(measured.stage1), "stage2": vars(measured.stage2), "source": measured.source}
        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache) as temp:
            Path(temp).write_text(json.dumps(stored, indent=1))
        return measured

    return costs
