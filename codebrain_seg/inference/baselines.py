"""The methods without a model: zero-fill (the lower bound) and the rescaled mean of the given sequences."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from codebrain_seg.inference.request import ImputationContext, check_request
from codebrain_seg.plans import Plans
from planners.case_arrays import normalise
from planners.fingerprint import brain_mask


class ZeroFill:
    """The missing sequences stay all-zero (the lower bound every method must beat)."""

    name = "zero"
    intensity_scale = "zero everywhere"

    def __init__(self, context: ImputationContext) -> None:
        self.num_channels = len(context.plans["channel_names"])

    def impute(self, images: np.ndarray, available: Sequence[bool]) -> np.ndarray:
        """Return the input with missing channels set to zero."""
        available = check_request(images, available, self.num_channels)
        output = images.astype(np.float32, copy=True)
        output[~available] = 0.0
        return output


class MeanOfAvailable:
    """Mean of the available sequences (each scaled to [0, 1]) rescaled to the missing sequence's typical range."""

    name = "mean"
    intensity_scale = "the training set's median 99.5th brain percentile of the missing sequence maps to 1"

    def __init__(self, context: ImputationContext) -> None:
        self.channel_names = list(context.plans["channel_names"])
        plans = Plans(context.plans)
        self.upper_percentile = plans.upper_percentile
        self.typical_upper = np.array(plans.reference_uppers, dtype=np.float32)

    def impute(self, images: np.ndarray, available: Sequence[bool]) -> np.ndarray:
        """Return the input with each missing channel set to the rescaled mean of the available ones."""
        available = check_request(images, available, len(self.channel_names))
        output = images.astype(np.float32, copy=True)
        mask = brain_mask([images[c] for c in np.flatnonzero(available)])
        scaled = [normalise(images[c], mask, self.upper_percentile)[0] for c in np.flatnonzero(available)]
        mean = np.mean(scaled, axis=0)
        for channel in np.flatnonzero(~available):
            output[channel] = mean * self.typical_upper[channel]
        return output
