"""Finite scalar quantisation: grid, level/index mappings, straight-through gradient."""
from __future__ import annotations

import math

import pytest
import torch

from codebrain_seg.networks.fsq import FSQ, PAPER_LEVELS, round_ste


@pytest.fixture
def fsq() -> FSQ:
    return FSQ(PAPER_LEVELS)


def test_codebook_size_and_basis(fsq: FSQ) -> None:
    assert fsq.codebook_size == 64000
    assert fsq.basis.tolist() == [1, 8, 64, 512, 2560, 12800]
    assert fsq.num_channels == 6


def test_codes_lie_exactly_on_the_level_grid(fsq: FSQ) -> None:
    torch.manual_seed(0)
    z = torch.randn(4, 6, 9, 7) * 4  # wide spread so the outermost bins are hit
    codes = fsq.quantize(z)
    assert codes.dtype == torch.float32
    assert codes.shape == z.shape
    grid_8 = torch.tensor([-1.0, -0.75, -0.5, -0.25, 0.0, 0.25, 0.5, 0.75])
    grid_5 = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0])
    for channel, grid in enumerate([grid_8] * 3 + [grid_5] * 3):
        values = codes[:, channel].flatten()
        distance = (values[:, None] - grid[None, :]).abs().min(dim=1).values
        assert torch.equal(distance, torch.zeros_like(distance)), f"channel {channel} is off the grid"
        # the wide input must reach both ends of the grid
        assert values.min().item() == grid[0].item() and values.max().item() == grid[-1].item()


def test_zero_maps_to_code_zero_and_extremes_saturate(fsq: FSQ) -> None:
    z = torch.zeros(1, 6, 1, 1)
    assert torch.equal(fsq.quantize(z), torch.zeros(1, 6, 1, 1))
    big = torch.full((1, 6, 1, 1), 50.0)
    assert fsq.quantize(big).flatten().tolist() == [0.75, 0.75, 0.75, 1.0, 1.0, 1.0]
    assert fsq.quantize(-big).flatten().tolist() == [-1.0] * 6


def test_all_64000_codes_round_trip_through_levels(fsq: FSQ) -> None:
    levels = fsq.all_levels()  # (64000, 6)
    assert levels.shape == (64000, 6)
    assert len({tuple(row) for row in levels.tolist()}) == 64000  # every combination exactly once
    assert torch.equal(levels.min(dim=0).values, torch.zeros(6, dtype=torch.long))
    assert torch.equal(levels.max(dim=0).values, torch.tensor([7, 7, 7, 4, 4, 4]))
    codes = fsq.levels_to_codes(levels)
    assert torch.equal(fsq.codes_to_levels(codes), levels)
    assert torch.equal(fsq.levels_to_codes(fsq.codes_to_levels(codes)), codes)


def test_flat_index_round_trip(fsq: FSQ) -> None:
    indices = torch.arange(64000)
    levels = fsq.indices_to_levels(indices)
    assert torch.equal(fsq.levels_to_indices(levels), indices)
    assert torch.equal(fsq.codes_to_indices(fsq.indices_to_codes(indices)), indices)
    # spatial layout: (B, h, w) <-> (B, d, h, w)
    spatial = torch.randint(0, 64000, (2, 3, 5))
    assert fsq.indices_to_levels(spatial).shape == (2, 6, 3, 5)
    assert torch.equal(fsq.levels_to_indices(fsq.indices_to_levels(spatial)), spatial)


def test_known_index(fsq: FSQ) -> None:
    levels = torch.tensor([1, 2, 3, 4, 0, 1]).view(1, 6, 1, 1)
    assert fsq.levels_to_indices(levels).item() == 1 + 2 * 8 + 3 * 64 + 4 * 512 + 0 + 1 * 12800
    codes = fsq.levels_to_codes(levels).flatten().tolist()
    assert codes == [-0.75, -0.5, -0.25, 1.0, -1.0, -0.5]


def test_quantized_levels_match_codes_of_quantize(fsq: FSQ) -> None:
    torch.manual_seed(1)
    codes = fsq.quantize(torch.randn(2, 6, 4, 4) * 3)
    levels = fsq.codes_to_levels(codes)
    assert levels.dtype == torch.long
    assert torch.equal(fsq.levels_to_codes(levels), codes)


def test_straight_through_gradient_equals_bounded_tanh_gradient(fsq: FSQ) -> None:
    torch.manual_seed(2)
    z = torch.randn(2, 6, 3, 3, dtype=torch.float64).float()
    weights = torch.randn(2, 6, 3, 3)
    z_quantized = z.clone().requires_grad_(True)
    (fsq.quantize(z_quantized) * weights).sum().backward()
    # reference: the same map without rounding, derivative written out by hand
    half_range = torch.tensor([3.5035] * 3 + [2.002] * 3).view(1, 6, 1, 1)
    half_width = torch.tensor([4.0] * 3 + [2.0] * 3).view(1, 6, 1, 1)
    shift = torch.atanh(torch.tensor([0.5 / 3.5035] * 3 + [0.0] * 3)).view(1, 6, 1, 1)
    expected = weights * (1 - torch.tanh(z + shift) ** 2) * half_range / half_width
    torch.testing.assert_close(z_quantized.grad, expected, rtol=1e-5, atol=1e-6)
    # and equal to autograd through the un-rounded bound
    z_bound = z.clone().requires_grad_(True)
    (fsq.bound(z_bound) / half_width * weights).sum().backward()
    torch.testing.assert_close(z_quantized.grad, z_bound.grad)


def test_round_ste_is_half_to_even_with_identity_gradient() -> None:
    values = torch.tensor([0.5, 1.5, 2.5, -0.5, 0.49], requires_grad=True)
    rounded = round_ste(values)
    assert rounded.tolist() == [0.0, 2.0, 2.0, -0.0, 0.0]
    rounded.sum().backward()
    assert values.grad.tolist() == [1.0] * 5


def test_quantize_runs_in_fp32_under_autocast(fsq: FSQ) -> None:
    z = torch.randn(1, 6, 2, 2).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        codes = fsq.quantize(z)
    assert codes.dtype == torch.float32


def test_bound_constants(fsq: FSQ) -> None:
    # the bounded range must stay strictly inside half a bin beyond the extreme integers
    saturated = fsq.bound(torch.full((1, 6, 1, 1), 1e3)).flatten()
    expected = torch.tensor([3.0 + 3.5 * 1e-3] * 3 + [2.0 + 2 * 1e-3] * 3)
    torch.testing.assert_close(saturated, expected)
    assert math.isclose(fsq.eps, 1e-3)


@pytest.mark.parametrize("levels", [[], [1, 4], [8, 0]])
def test_invalid_levels_raise(levels: list[int]) -> None:
    with pytest.raises(ValueError, match="levels"):
        FSQ(levels)


def test_wrong_channel_count_raises(fsq: FSQ) -> None:
    with pytest.raises(ValueError, match="6 channels"):
        fsq.quantize(torch.zeros(1, 5, 2, 2))
