"""codebrain_seg/inference/confidence.py: the ordinal confidence of the grading logits."""
from __future__ import annotations

import pytest
import torch

from codebrain_seg.inference.confidence import ordinal_confidence


def test_ordinal_confidence():
    levels = [8, 5]
    certain = torch.full((1, 11, 2, 3), 30.0)
    assert torch.allclose(ordinal_confidence(certain, levels), torch.ones(1, 2, 3))
    undecided = torch.zeros((1, 11, 2, 3))
    assert torch.allclose(ordinal_confidence(undecided, levels), torch.zeros(1, 2, 3), atol=1e-6)
    mixed = certain.clone()
    mixed[:, :7] = 0.0  # first channel undecided, second certain -> 0.5
    assert torch.allclose(ordinal_confidence(mixed, levels), torch.full((1, 2, 3), 0.5), atol=1e-6)
    with pytest.raises(ValueError, match="grading logits"):
        ordinal_confidence(torch.zeros(1, 12, 2, 3), levels)
