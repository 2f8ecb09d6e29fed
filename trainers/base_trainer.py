"""The one training loop of the project: device, precision, DDP, schedule, checkpoints, logs, validation cadence.

A method stage subclasses :class:`BaseTrainer` and fills in four hooks: ``build_networks``,
``configure_optimizers`` (usually through :meth:`BaseTrainer.add_optimizer`), ``train_step`` (one iteration on a
batch with one missing pattern) and ``validate`` (metrics with a ``score``, higher is better); optionally
``check_prerequisites`` and ``extra_checkpoint``. A method that trains on something other than 2D slices (e.g.
CoPeDiT's 3D volumes or cached latents) overrides ``training_stream`` and ``prepare_batch`` and sets
``memory_format``; the loop itself stays the same.
Everything else (resume, logging, checkpoint layout) is shared, so every method and stage behaves the same.

Checkpoints (``checkpoint_{latest,best,final}.pth``) are plain dicts of tensors, numbers, strings, lists and
dicts, written atomically and always read back with ``torch.load(..., weights_only=True)``.
"""
from __future__ import annotations

import logging
import math
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, ContextManager

import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm import tqdm

from codebrain_seg.device import PRECISIONS, native_bf16, preferred_memory_format, select_device  # noqa: F401
from codebrain_seg.errors import InputError
from codebrain_seg.plans import Configuration
from planners.sizing import default_save_every
from trainers.checkpointing import CHECKPOINT_FORMAT, CheckpointingMixin  # noqa: F401 (the loop's API)
from trainers.data_loading import (
    VolumeCache,
    close_batches,
    draw_missing_pattern,
    middle_slices,
    training_batches,
)
from trainers.distributed import (  # noqa: F401 (part of the loop's API)
    DistributedContext,
    distributed_context,
    init_distributed,
    rng_state,
    set_rng_state,
)
from trainers.gradient_steps import MAX_NONFINITE_STEPS, guarded_step  # noqa: F401 (the loop's API)
from trainers.options import TrainingOptions, choose_compile, default_cpu_threads
from trainers.training_logs import (  # noqa: F401 (part of the loop's API)
    append_metrics,
    attach_log_file,
    detach_log_file,
    format_metrics,
    plot_progress,
    read_metrics,
    truncate_metrics,
)

logger = logging.getLogger(__name__)

class BaseTrainer(CheckpointingMixin):
    """Iteration-based training of one stage of one method (subclass and fill in the hooks).

    Args:
        plans: the dataset's plans (``codebrainPlans.json``).
        configuration_name: key in ``plans['configurations']``.
        data_folder: preprocessed folder of the configuration (``CASE.npy`` + ``CASE.json``).
        split: ``{'train': [...], 'val': [...]}`` case ids of the fold.
        output_dir: folder of this stage's checkpoints and logs.
        options: run options; see :class:`TrainingOptions`.
        identity: dataset / fold / method names recorded in checkpoints.
    """

    method = ""
    stage = 0
    # Memory order of the networks and batches: None = the device's preferred 2D order
    # (codebrain_seg.device.preferred_memory_format); the 3D methods set the default order.
    memory_format: torch.memory_format | None = None
    # "auto" precision on a CPU with native bf16: autocast to bf16 (a trainer whose backward is not reliable in
    # bf16 on the CPU sets False and trains in fp32 there).
    cpu_auto_bf16: bool = True

    def __init__(self, plans: dict[str, Any], configuration_name: str, data_folder: Path,
                 split: dict[str, list[str]], output_dir: Path, options: TrainingOptions,
                 identity: dict[str, Any] | None = None) -> None:
        self.plans = plans
        self.configuration_name = configuration_name
        self.configuration = plans["configurations"][configuration_name]
        self.planned = Configuration(self.configuration, configuration_name)  # read through named properties
        self.data_folder, self.split, self.output_dir = Path(data_folder), split, Path(output_dir)
        self.options, self.identity = options, dict(identity or {})
        self.channel_names = list(plans["channel_names"])
        self.num_channels = len(self.channel_names)
        stage_plan = self.planned.stage(self.stage)
        self.total_iterations = int(options.iterations or stage_plan["iterations"])
        self.batch_size = int(options.batch_size or stage_plan["batch_size"])
        if self.total_iterations < 1 or self.batch_size < 1:
            raise InputError(f"iterations and batch size must be >= 1, got {self.total_iterations}, {self.batch_size}")
        self.context = distributed_context()
        self.device = select_device(options.device, self.context.local_rank)
        self.memory_format = type(self).memory_format or preferred_memory_format(self.device)
        self.check_prerequisites()  # before anything is written
        planned_every = self.planned.validation_every(self.stage) if options.iterations is None else None
        self.val_every = int(options.val_every or planned_every or max(1, min(10_000, self.total_iterations // 10)))
        self.save_every = int(options.save_every or default_save_every(self.total_iterations, self.val_every))
        self.precision = self._choose_precision(options.precision)
        self.compiled = choose_compile(options.compile, self.total_iterations, self.device)
        self.iteration = 0
        self.nonfinite_steps: dict[str, int] = {}  # consecutive skipped steps per network
        self.skipped_steps = 0  # in this process's run, all networks
        self.best_metric: float | None = None
        self.best_iteration = -1
        self.history: list[dict[str, Any]] = []
        self._window: dict[str, list[float]] = {}  # loss name -> [sum, count] since the last log record
        self.networks: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler] = {}
        self.train_modules: dict[str, nn.Module] = {}

    # ---- hooks ----------------------------------------------------------------------------------------

    def check_prerequisites(self) -> None:
        """Raise (before anything is written) when the stage cannot start."""

    def build_networks(self) -> None:
        """Fill ``self.networks`` with the trained networks (the loop moves them to the device)."""
        raise NotImplementedError

    def configure_optimizers(self) -> None:
        """Create optimisers and schedulers, usually with :meth:`add_optimizer` (networks are on the device)."""
        raise NotImplementedError

    def train_step(self, x: Tensor, available: Tensor, iteration: int) -> dict[str, float]:
        """One iteration on ``x`` ``(B, C, H, W)`` with pattern ``available`` ``(C,)`` bool; returns losses."""
        raise NotImplementedError

    def validate(self) -> dict[str, Any]:
        """Validation metrics on the fold's validation cases; must hold ``score`` (higher is better)."""
        raise NotImplementedError

    def extra_checkpoint(self, name: str) -> dict[str, Any]:
        """Additional entries for checkpoint ``name`` (e.g. frozen networks for inference)."""
        return {}

    def training_stream(self) -> Any:
        """Iterator of batches ``{'data', 'keys', 'iteration'}`` from ``self.iteration`` on (default: 2D slices)."""
        return training_batches(
            self.data_folder, self.split["train"], self.batch_size, self.planned.crop_size,
            self.options.seed, self.context.rank, self.context.world_size, self.iteration,
            self._num_workers(), augment=not self.options.extra.get("no_augmentation", False),
            pin_memory=self.device.type == "cuda")

    def prepare_batch(self, batch: dict[str, Any]) -> Tensor:
        """The tensor ``train_step`` receives: ``batch['data']`` on the device in :attr:`memory_format`."""
        x = torch.from_numpy(batch["data"]).to(self.device, non_blocking=True)
        return x.contiguous(memory_format=self.memory_format)

    # ---- shared machinery ---------------------------------------------------------------------------

    def reconstruction_weights(self) -> tuple[float, float]:
        """``(lambda_missing, lambda_available)``: the run's ``loss_weights`` override, else the plans'."""
        if self.options.loss_weights is not None:
            missing, available = self.options.loss_weights
            return float(missing), float(available)
        return self.planned.loss.reconstruction

    @property
    def is_main(self) -> bool:
        """True on the process that writes logs and checkpoints."""
        return self.context.is_main

    def _choose_precision(self, requested: str) -> str:
        if requested not in PRECISIONS:
            raise InputError(f"precision must be one of {PRECISIONS}, got {requested!r}")
        if requested == "auto":
            usable = self.device.type == "cuda" or self.cpu_auto_bf16
            return "bf16" if usable and native_bf16(self.device) else "fp32"
        if requested == "fp16" and self.device.type != "cuda":
            raise InputError("fp16 autocast needs a CUDA device; use fp32 or bf16 on the CPU")
        return requested

    def autocast(self) -> ContextManager[Any]:
        """Mixed-precision context of the chosen precision (a no-op for fp32)."""
        if self.precision == "fp32":
            return nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def prepare_module(self, name: str, module: nn.Module) -> nn.Module:
        """Wrap a trained network for this run (DDP across ranks, optional torch.compile)."""
        wrapped: nn.Module = module
        if self.context.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            wrapped = nn.parallel.DistributedDataParallel(module, device_ids=ids)
        if self.compiled:
            wrapped = torch.compile(wrapped)
        self.train_modules[name] = wrapped
        return wrapped

    def add_optimizer(self, name: str, spec: dict[str, Any], cosine: bool) -> None:
        """AdamW for network ``name`` from a plans entry; optionally cosine-annealed per iteration to ``eta_min``."""
        optimizer = torch.optim.AdamW(
            self.networks[name].parameters(), lr=float(spec["lr"]), betas=tuple(spec["betas"]),
            weight_decay=float(spec["weight_decay"]), fused=True)  # one kernel per step instead of ~10 per tensor
        self.optimizers[name] = optimizer
        if cosine:
            self.schedulers[name] = torch.optim.lr_scheduler.CosineAnnealingLR(
                optimizer, T_max=self.total_iterations, eta_min=float(spec["eta_min"]))

    def optimizer_step(self, name: str, loss: Tensor, max_norm: float | None = None) -> float:
        """Backward, optional clipping and step of network ``name``; a non-finite step is skipped
        (:func:`trainers.gradient_steps.guarded_step`). Returns the gradient norm before clipping."""
        return guarded_step(self, name, loss, max_norm)

    def draw_pattern(self, iteration: int) -> Tensor:
        """The availability pattern ``(C,)`` bool of ``iteration``, shared by the batch, pure in (seed, rank, it)."""
        pattern = draw_missing_pattern(self.options.seed, self.context.rank, iteration, self.num_channels)
        return torch.tensor(pattern, device=self.device)

    def validation_batches(self) -> list[Tensor]:
        """The fixed validation slices (middle brain slices of each validation case) in batches on the device."""
        cases = self.split["val"]
        entries = middle_slices(self.data_folder, cases, self.options.max_val_slices_per_case)
        cache = VolumeCache(self.data_folder, cases)
        batches = []
        for start in range(0, len(entries), self.batch_size):
            array = cache.slices(entries[start:start + self.batch_size])
            batches.append(torch.from_numpy(array).to(self.device).contiguous(memory_format=self.memory_format))
        return batches

    def _setup(self) -> None:
        if self.options.num_threads:
            torch.set_num_threads(self.options.num_threads)
        elif self.device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
            torch.set_num_threads(default_cpu_threads(self.context.local_world_size))
        init_distributed(self.context, self.device)
        torch.manual_seed(self.options.seed)  # same initial weights on every rank
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.build_networks()
        for module in self.networks.values():
            module.to(self.device, memory_format=self.memory_format)
            for parameter in module.parameters():
                if parameter.dim() == 4 and parameter.shape[0] == 1:
                    # Broadcast scales (1, C, 1, 1) get channels-last strides that DDP's gradient buckets reject.
                    parameter.data = parameter.data.clone(memory_format=torch.contiguous_format)
        self.configure_optimizers()
        self.train_modules = {}
        for name, module in self.networks.items():
            self.prepare_module(name, module)

    def _record_window(self, losses: dict[str, float]) -> None:
        for key, value in losses.items():
            if key.startswith("grad_norm") and not math.isfinite(float(value)):
                continue  # a skipped step (counted in the record's skipped_steps): it would make the mean nan
            total = self._window.setdefault(key, [0.0, 0.0])
            total[0] += float(value)
            total[1] += 1.0

    def _flush_window(self, keys: list[str], lr: dict[str, float], seconds: float) -> dict[str, Any]:
        """Average the window's losses over iterations and ranks; gather this iteration's slice keys."""
        names = sorted(self._window)
        totals = torch.tensor([self._window[n] for n in names], dtype=torch.float64).reshape(-1, 2)
        gathered_keys: list[Any] = [keys]
        if self.context.world_size > 1:
            # Every rank logs the same loss names at the same iterations, so the reduction lines up.
            totals = totals.to(self.device)
            dist.all_reduce(totals)
            gathered_keys = [None] * self.context.world_size
            dist.all_gather_object(gathered_keys, keys)
        self._window = {}
        record = {"kind": "train", "iteration": self.iteration,
                  "losses": {n: float(totals[i, 0]) / max(float(totals[i, 1]), 1.0) for i, n in enumerate(names)},
                  "lr": lr, "seconds_per_iteration": seconds, "batch_keys": gathered_keys,
                  "slices_per_second": self.batch_size * self.context.world_size / seconds if seconds > 0 else None,
                  "skipped_steps": self.skipped_steps}
        if self.device.type == "cuda":
            record["gpu_memory_gb"] = torch.cuda.max_memory_allocated(self.device) / 1e9
        return record

    def _run_validation(self) -> None:
        if self.is_main:
            for module in self.networks.values():
                module.eval()
            started = time.time()
            metrics = self.validate()
            score = float(metrics["score"])
            is_best = self.best_metric is None or score >= self.best_metric
            if is_best:
                self.best_metric, self.best_iteration = score, self.iteration
            record = {"kind": "val", "iteration": self.iteration, **metrics, "best": is_best,
                      "seconds": round(time.time() - started, 3)}
            self.history.append(record)
            append_metrics(self.output_dir, record)
            logger.info("validation at iteration %d: score %.3f%s (%s)", self.iteration, score,
                        " (new best)" if is_best else "", format_metrics(metrics))
            if is_best:
                self.save_checkpoint("checkpoint_best.pth")
            plot_progress(self.output_dir, self.history, self.stage)
        if self.context.world_size > 1:
            dist.barrier()

    def run(self) -> Path:
        """Train to ``total_iterations`` (resuming when asked); returns the output folder."""
        handler = attach_log_file(self.output_dir, self.is_main)
        stream = None
        try:
            self._setup()
            if not self._resume():
                return self.output_dir
            self._log_start()
            if self.options.validate_at_start and self.iteration == 0:
                self._run_validation()
            stream = self.training_stream()
            self._loop(stream)
            self.save_checkpoint("checkpoint_final.pth")
            self.save_checkpoint("checkpoint_latest.pth")
            if self.is_main:
                plot_progress(self.output_dir, self.history, self.stage)
                logger.info("stage %d finished: best score %s at iteration %d", self.stage,
                            f"{self.best_metric:.3f}" if self.best_metric is not None else "n/a",
                            self.best_iteration)
            if self.context.world_size > 1:
                dist.barrier()  # the next stage reads this stage's final checkpoint on every rank
        except KeyboardInterrupt:
            logger.warning("interrupted at iteration %d; rerun the same command to resume from the last "
                           "checkpoint_latest.pth (--overwrite starts over)", self.iteration)
            raise
        finally:
            if stream is not None:
                close_batches(stream)
            detach_log_file(handler)
        return self.output_dir

    def _log_start(self) -> None:
        if not self.is_main:
            return
        parameters = {k: sum(p.numel() for p in m.parameters()) for k, m in self.networks.items()}
        logger.info("%s stage %d | configuration %s | device %s | precision %s%s | world size %d | threads %d",
                    self.method, self.stage, self.configuration_name, self.device, self.precision,
                    " | torch.compile" if self.compiled else "", self.context.world_size, torch.get_num_threads())
        logger.info("iterations %d | batch %d per rank | %d training / %d validation cases | validate every %d, "
                    "save every %d | parameters %s | output %s", self.total_iterations, self.batch_size,
                    len(self.split["train"]), len(self.split["val"]), self.val_every, self.save_every,
                    {k: f"{v / 1e6:.2f}M" for k, v in parameters.items()}, self.output_dir)

    def _num_workers(self) -> int:
        if self.options.num_workers is not None:
            return int(self.options.num_workers)
        # On a CPU the network needs every core; a GPU is fed by background workers.
        return 0 if self.device.type == "cpu" else min(4, max(1, (os.cpu_count() or 2) // self.context.local_world_size - 1))

    def _loop(self, stream: Any) -> None:
        bar = tqdm(total=self.total_iterations, initial=self.iteration, unit="it", dynamic_ncols=True,
                   disable=not (self.is_main and sys.stderr.isatty()))
        last_line, window_start, window_iteration = time.time(), time.time(), self.iteration
        while self.iteration < self.total_iterations:
            batch = next(stream)
            if batch["iteration"] != self.iteration:
                raise RuntimeError(f"data stream out of step: batch of iteration {batch['iteration']} "
                                   f"at iteration {self.iteration}")
            x = self.prepare_batch(batch)
            for module in self.networks.values():
                module.train()
            losses = self.train_step(x, self.draw_pattern(self.iteration), self.iteration)
            self.scaler.update()
            for scheduler in self.schedulers.values():
                scheduler.step()
            self.iteration += 1
            self._record_window(losses)
            bar.update(1)
            done = self.iteration == self.total_iterations
            if self.iteration % self.options.log_every == 0 or done:
                seconds = (time.time() - window_start) / max(1, self.iteration - window_iteration)
                lr = {k: o.param_groups[0]["lr"] for k, o in self.optimizers.items()}
                record = self._flush_window(batch["keys"], lr, round(seconds, 4))
                window_start, window_iteration = time.time(), self.iteration
                if self.is_main:
                    self.history.append(record)
                    append_metrics(self.output_dir, record)
                    bar.set_postfix({k: f"{v:.3g}" for k, v in record["losses"].items()}, refresh=False)
                    if bar.disable and (time.time() - last_line > 30 or done):
                        last_line = time.time()
                        logger.info("iteration %d/%d: %s (%.2f s/it)", self.iteration, self.total_iterations,
                                    format_metrics(record["losses"]), seconds)
            if self.iteration % self.val_every == 0 or done:
                self._run_validation()
            if self.iteration % self.save_every == 0 and not done:
                self.save_checkpoint("checkpoint_latest.pth")
        bar.close()

