"""planners/slice_preprocessing.py: the evaluated middle slices."""
from __future__ import annotations

from planners.slice_preprocessing import (
    middle_slices,
)


def test_middle_slices():
    assert middle_slices(10, 4).tolist() == [3, 4, 5, 6]
    assert middle_slices(155, 80).tolist() == list(range(37, 117))  # the reference's BraTS slices 37..116
    assert middle_slices(5, 80).tolist() == [0, 1, 2, 3, 4]
