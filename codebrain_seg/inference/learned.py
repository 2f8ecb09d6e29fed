"""The registry adapter every learned slice-wise method shares: load the predictor of a results folder, fingerprint it,
impute through it."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from codebrain_seg.inference.request import ImputationContext, model_fingerprint
from codebrain_seg.inference.slice_predictor import SlicePredictor
from codebrain_seg.results_layout import model_fold_dir


class LearnedImputer:
    """Registry adapter of a :class:`SlicePredictor` loaded from the results folder (see subclasses)."""

    name = ""
    trainer_folder = ""

    def __init__(self, context: ImputationContext) -> None:
        options = context.options
        fold_dir = Path(context.model_dir) if context.model_dir is not None else self.fold_dir(context)
        checkpoint, source_rule = options.get("checkpoint", "final"), options.get("source_rule", "random")
        self.predictor = self.load(fold_dir, context.configuration, context.device, checkpoint,
                                   options.get("batch_size"), source_rule)
        # bf16 where the device computes it natively (``options["precision"]``: auto | fp32 | bf16), mirroring, and
        # the predictor's own options (CodeBrain: code_decoding).
        chosen = self.predictor.apply_options(options)
        self.intensity_scale = self.predictor.intensity_scale
        # These options change the imputed values: they key cached imputations too.
        self._model = (fold_dir, checkpoint, {"source_rule": source_rule, **chosen})

    def fingerprint(self) -> dict[str, Any]:
        """See :func:`model_fingerprint`."""
        return model_fingerprint(*self._model)

    def fold_dir(self, context: ImputationContext) -> Path:
        """The model's ``fold_F`` folder in ``$codebrain_results`` for the context's dataset, fold, configuration."""
        return model_fold_dir(context.dataset, context.fold, context.configuration, self.trainer_folder)

    @staticmethod
    def load(fold_dir: Path, configuration: str, device: str, checkpoint: str,
             batch_size: int | None, source_rule: str = "random") -> SlicePredictor:
        """Load the predictor of a ``fold_F`` folder."""
        raise NotImplementedError

    def impute(self, images: np.ndarray, available: Sequence[bool], affine: np.ndarray | None = None) -> np.ndarray:
        """See :meth:`SlicePredictor.impute_arrays` (arrays in RAS voxel order unless ``affine`` is given)."""
        return self.predictor.impute_arrays(images, available, affine)

    def impute_normalised(self, stack: np.ndarray, available: Sequence[bool]) -> np.ndarray:
        """See :meth:`SlicePredictor.impute_normalised`."""
        return self.predictor.impute_normalised(stack, available)

