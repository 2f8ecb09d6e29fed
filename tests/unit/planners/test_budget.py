"""planners/budget.py: the analytic compute and memory estimates the planner sizes the networks with."""
from __future__ import annotations

import pytest

from planners.budget import (
    PAPER_SIZE,
    NetworkSize,
    _block_macs,
    approximate_parameters,
    decoder_macs_per_pixel,
    encoder_macs_per_pixel,
    training_flops_per_slice,
    training_memory_bytes,
)

SMALL = NetworkSize(posterior_width=8, common_width=16, decoder_width=16, depth=1)


def test_block_macs_count_the_nafblock_convolutions() -> None:
    # 1x1 c->2c (2c^2), depthwise 3x3 on 2c (18c), 1x1 c->c (c^2), FFN 1x1 c->2c (2c^2) and 1x1 c->c (c^2)
    assert _block_macs(1) == 6 + 18
    assert _block_macs(8) == 6 * 64 + 18 * 8 == 528


def test_encoder_and_decoder_macs_known_values() -> None:
    # width 1, depth 1, one input channel: stem 9 + blocks at widths 1, 2, 4, 8 over 1, 4, 16, 64 pixels
    # + the 2x2 stride-2 down-sampling convolutions into levels 1..3
    blocks = _block_macs(1) + _block_macs(2) / 4 + _block_macs(4) / 16 + _block_macs(8) / 64
    downs = 4 * 1 * 2 / 4 + 4 * 2 * 4 / 16 + 4 * 4 * 8 / 64
    assert encoder_macs_per_pixel(1, 1, 1) == pytest.approx(9 + blocks + downs)
    fused = 16
    expected = ((6 + 8) * fused / 64 + fused * fused / 64
                + _block_macs(16) / 64 + _block_macs(4) / 16 + _block_macs(2) / 4 + _block_macs(1)
                + 4 * 8 / 16 + 2 * 4 / 4 + 9 * 1)
    assert decoder_macs_per_pixel(1, 1, 6, 1) == pytest.approx(expected)


def test_flops_are_six_times_the_macs_and_linear_in_pixels() -> None:
    macs = (encoder_macs_per_pixel(8, 1, 4) + encoder_macs_per_pixel(16, 1, 4)
            + decoder_macs_per_pixel(16, 1, 6, 4))
    assert training_flops_per_slice(SMALL, 64 * 64, 4) == pytest.approx(6 * macs * 64 * 64)
    assert training_flops_per_slice(SMALL, 2 * 4096, 4) == pytest.approx(2 * training_flops_per_slice(SMALL, 4096, 4))


def test_estimates_grow_with_width_depth_pixels_and_batch() -> None:
    wider = NetworkSize(16, 32, 32, 1)
    deeper = NetworkSize(8, 16, 16, 3)
    for bigger in (wider, deeper, PAPER_SIZE):
        assert training_flops_per_slice(bigger, 4096, 4) > training_flops_per_slice(SMALL, 4096, 4)
        assert approximate_parameters(bigger, 4) > approximate_parameters(SMALL, 4)
        assert training_memory_bytes(bigger, 4096, 2, 1e6) > training_memory_bytes(SMALL, 4096, 2, 1e6)
    memory = [training_memory_bytes(SMALL, 4096, batch, 1e6) for batch in (1, 2, 4, 8)]
    assert memory == sorted(memory) and len(set(memory)) == 4
    # memory is affine in the batch: activations x batch + 16 bytes per parameter (weights, grads, AdamW)
    per_slice = memory[1] - memory[0]
    assert memory[2] - memory[1] == pytest.approx(2 * per_slice) and memory[3] - memory[2] == pytest.approx(4 * per_slice)
    assert training_memory_bytes(SMALL, 4096, 1, 2e6) - memory[0] == pytest.approx(16 * 1e6)


def test_paper_size_parameters_and_reference_memory() -> None:
    assert PAPER_SIZE.as_dict() == {"posterior_width": 32, "common_width": 96, "decoder_width": 96, "depth": 6}
    parameters = approximate_parameters(PAPER_SIZE, 4)
    assert parameters == 133_582_368
    # the calibration the module states: batch 8 of 256 x 256 slices fits a 24 GB GPU, batch 16 does not
    assert 16e9 < training_memory_bytes(PAPER_SIZE, 256 * 256, 8, parameters) < 24e9
    assert training_memory_bytes(PAPER_SIZE, 256 * 256, 16, parameters) > 24e9


def test_approximate_parameters_known_value() -> None:
    size = NetworkSize(1, 1, 1, 1)
    per_block = sum(7 * w * w + 33 * w for w in (1, 2, 4, 8))  # each encoder: widths 1, 2, 4, 8, one block each
    decoder = sum(7 * w * w + 33 * w for w in (16, 4, 2, 1))
    fused = 16
    assert approximate_parameters(size, 4) == pytest.approx(2 * per_block + decoder + (6 + 8) * fused + fused ** 2)
