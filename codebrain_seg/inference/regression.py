"""The direct-regression baseline's predictor: a trained :class:`RegressionNetwork` behind the slice pipeline."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from codebrain_seg.checkpoints import (
    check_checkpoint_name,
    check_trained_configuration,
    load_checkpoint,
)
from codebrain_seg.device import preferred_memory_format
from codebrain_seg.errors import MissingFileError
from codebrain_seg.inference.learned import LearnedImputer
from codebrain_seg.inference.slice_predictor import SlicePredictor, network_input
from codebrain_seg.networks import CodeBrainConfig, RegressionNetwork
from codebrain_seg.results_layout import METHOD_FOLDERS


class RegressionPredictor(SlicePredictor):
    """A trained :class:`RegressionNetwork` with its plans (same preprocessing, scale and geometry as CodeBrain)."""

    def __init__(self, network: RegressionNetwork, plans: dict[str, Any], configuration: str,
                 device: str | torch.device = "cpu", batch_size: int | None = None,
                 model_info: dict[str, Any] | None = None) -> None:
        super().__init__(plans, configuration, device, batch_size, model_info)
        self.network = network.to(self.device, memory_format=preferred_memory_format(self.device)).eval()

    @torch.no_grad()
    def predict_slices(self, masked: np.ndarray | Tensor) -> dict[str, Tensor]:
        """``{"reconstruction": (B, C, H, W)}`` (unclamped, on the CPU) from zero-filled slices."""
        x = network_input(masked, self.device)
        return {"reconstruction": self.network(x).float().cpu()}


def load_regression_from_folder(fold_dir: Path, configuration: str | None = None, device: str = "cpu",
                                checkpoint: str = "final", batch_size: int | None = None) -> RegressionPredictor:
    """Load the direct-regression baseline from ``fold_F/stage1/checkpoint_<checkpoint>.pth``."""
    check_checkpoint_name(checkpoint)
    path = Path(fold_dir) / "stage1" / f"checkpoint_{checkpoint}.pth"
    if not path.is_file():
        raise MissingFileError(f"no trained regression baseline: {path} is missing (train it with "
                               "codebrain_train --method regression, or run_training(method='regression'))")
    state = load_checkpoint(path, expect={"method": "regression"}, keys=("networks.generator", "network_config"),
                            what="regression-baseline checkpoint")
    trained_configuration = check_trained_configuration(state, path, configuration)
    network = RegressionNetwork(CodeBrainConfig.from_dict(state["network_config"]))
    network.load_state_dict(state["networks"]["generator"])
    info = {"model_folder": str(fold_dir), "checkpoint": f"stage1/{path.name}", "method": "regression",
            "iteration": state.get("iteration"), "best_score": state.get("best_metric")}
    return RegressionPredictor(network, state["plans"], trained_configuration, device, batch_size,
                               info)


class RegressionImputer(LearnedImputer):
    """The ``regression`` entry of the registry: the direct-regression baseline trained by
    ``run_training(method="regression")`` (folder ``Regression__<plans>__<configuration>``)."""

    name = "regression"
    trainer_folder = METHOD_FOLDERS["regression"]

    @staticmethod
    def load(fold_dir: Path, configuration: str, device: str, checkpoint: str,
             batch_size: int | None, source_rule: str = "random") -> SlicePredictor:
        """The regression network (:func:`load_regression_from_folder`; it has no variants)."""
        return load_regression_from_folder(fold_dir, configuration, device, checkpoint, batch_size)

