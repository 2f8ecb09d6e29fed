"""The training loop's checkpoints: what a checkpoint holds, writing it atomically, restoring it and resuming.

A checkpoint (``checkpoint_{latest,best,final}.pth``) is a plain dict of tensors, numbers, strings, lists and dicts
(docs/reference/checkpoints.md), written by global rank 0 through a temporary file and a rename, and read back with
``torch.load(..., weights_only=True)`` (``codebrain_seg.checkpoints.load_checkpoint``).
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from codebrain_seg.checkpoints import CheckpointError, load_checkpoint
from codebrain_seg.io import atomic_path
from trainers.distributed import rng_state, set_rng_state
from trainers.training_logs import truncate_metrics

logger = logging.getLogger("trainers.base_trainer")

CHECKPOINT_FORMAT = 1


class CheckpointingMixin:
    """Checkpoint writing, restoring and resuming of :class:`trainers.base_trainer.BaseTrainer` (which holds the
    networks, optimisers, schedulers, scaler, options and counters these methods read and set)."""

    def _checkpoint_payload(self, name: str) -> dict[str, Any]:
        options = asdict(self.options)
        return {
            "format_version": CHECKPOINT_FORMAT, "method": self.method, "stage": self.stage,
            "trainer": type(self).__name__, "checkpoint": name, "iteration": self.iteration,
            "total_iterations": self.total_iterations, "best_metric": self.best_metric,
            "best_iteration": self.best_iteration, "plans": self.plans,
            "configuration_name": self.configuration_name, "identity": self.identity,
            "options": json.loads(json.dumps(options, default=str)), "world_size": self.context.world_size,
            "precision": self.precision, "batch_size": self.batch_size,
            "networks": {k: m.state_dict() for k, m in self.networks.items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "scaler": self.scaler.state_dict(), "rng": rng_state(self.device),
            "log_window": {k: list(v) for k, v in self._window.items()},
            **self.extra_checkpoint(name),
        }

    def save_checkpoint(self, name: str) -> None:
        """Write ``name`` (e.g. ``checkpoint_latest.pth``) atomically; only global rank 0 writes."""
        if not self.is_main:
            return
        with atomic_path(self.output_dir / name) as temp:
            torch.save(self._checkpoint_payload(name), temp)

    def load_checkpoint(self, path: Path) -> None:
        """Restore the complete training state (weights, optimisers, schedulers, RNG, iteration, log window)."""
        try:
            state = load_checkpoint(path, keys=("networks", "optimizers", "schedulers", "scaler", "rng",
                                                "iteration"), what="training checkpoint", map_location=self.device)
        except CheckpointError as error:
            raise CheckpointError(f"{error} (or rerun with --overwrite to start this stage over)") from error
        if state.get("method") != self.method or state.get("stage") != self.stage:
            raise CheckpointError(f"{path} holds {state.get('method')!r} stage {state.get('stage')}, "
                                  f"not {self.method!r} stage {self.stage}: rerun with --overwrite to start over")
        trained = state.get("configuration_name")
        if trained not in (None, self.configuration_name):
            raise CheckpointError(f"{path} was trained with configuration {trained!r}, not "
                                  f"{self.configuration_name!r}: rerun with --overwrite to start over")
        for key, module in self.networks.items():
            module.load_state_dict(state["networks"][key])
        for key, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][key])
        for key, scheduler in self.schedulers.items():
            scheduler.load_state_dict(state["schedulers"][key])
        self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"], self.device)
        self.iteration = int(state["iteration"])
        self.best_metric, self.best_iteration = state["best_metric"], int(state["best_iteration"])
        self._window = {k: [float(v[0]), float(v[1])] for k, v in state["log_window"].items()}

    def _resume(self) -> bool:
        """Returns False when the stage is already finished."""
        latest, final = self.output_dir / "checkpoint_latest.pth", self.output_dir / "checkpoint_final.pth"
        if self.is_main:
            for leftover in self.output_dir.glob(".checkpoint_*.tmp*"):
                leftover.unlink()  # a write interrupted by a kill; the checkpoint it was replacing is intact
        if self.options.overwrite:
            stale = sorted(self.output_dir.glob("checkpoint_*.pth"))
            if stale and self.is_main:
                logger.warning("--overwrite: starting over, removing %s", ", ".join(p.name for p in stale))
                for path in stale:
                    path.unlink()
            truncate_metrics(self.output_dir, 0, self.is_main)
            return True
        # Resuming is the default (the interruption message says "rerun the same command"): a finished stage is
        # never retrained or deleted without --overwrite.
        if not latest.is_file():
            if final.is_file():
                logger.info("stage %d is already finished (%s); nothing to do (--overwrite retrains it)",
                            self.stage, final)
                return False
            logger.info("no %s yet, starting from iteration 0", latest.name)
            truncate_metrics(self.output_dir, 0, self.is_main)
            return True
        self.load_checkpoint(latest)
        if self.iteration >= self.total_iterations and final.is_file():
            logger.info("stage %d is already finished at iteration %d; nothing to do", self.stage, self.iteration)
            return False
        logger.info("resuming from %s at iteration %d of %d", latest, self.iteration, self.total_iterations)
        self.history = truncate_metrics(self.output_dir, self.iteration, self.is_main)
        return True
