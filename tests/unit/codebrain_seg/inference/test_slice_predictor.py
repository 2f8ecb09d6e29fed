"""The slice pipeline of the learned imputers: empty slices skipped, batch size from memory, bf16 where native,
test-time mirroring."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from codebrain_seg.errors import InputError
from codebrain_seg.inference import slice_predictor
from codebrain_seg.inference.slice_predictor import SlicePredictor, inference_batch_size, resolve_inference_precision

PLANS = {"channel_names": ["T1", "T2"], "normalization": {"upper_percentile": 99.5},
         "intensity_reference": {"T1": {"median_p99_5": 100.0}, "T2": {"median_p99_5": 200.0}},
         "configurations": {"2d_cpu": {"crop_size": [16, 16], "slicing_axis": 2,
                                       "network": {"posterior_width": 8, "common_width": 8, "decoder_width": 8}}}}


class Recording(SlicePredictor):
    """Doubles its input; remembers which slices (by their constant value) each batch held."""

    def __init__(self, **options):
        super().__init__(PLANS, "2d_cpu", **options)
        self.batches: list[list[float]] = []
        self.dtypes: list[torch.dtype] = []

    def predict_slices(self, masked):
        x = torch.as_tensor(masked)
        self.batches.append([float(v) for v in x[:, 0, 0, 0]])
        self.dtypes.append((torch.ones(2, 2) @ torch.ones(2, 2)).dtype)  # what a matmul runs in here
        return {"reconstruction": x * 2}


def test_slices_without_any_given_signal_are_not_computed():
    stack = np.zeros((2, 5, 16, 16), np.float32)
    for index in (1, 3, 4):
        stack[0, index] = 0.1 * index
    predictor = Recording(batch_size=2, precision="fp32")
    output, _ = predictor.predict_stack(stack)
    assert predictor.batches == [[pytest.approx(0.1), pytest.approx(0.3)], [pytest.approx(0.4)]]
    assert np.allclose(output[0, [1, 3, 4]], 2 * stack[0, [1, 3, 4]]) and not output[:, [0, 2]].any()


class Ramp(SlicePredictor):
    """Adds a ramp along the slice's height and a column mark along its width: not flip-equivariant."""

    supports_confidence = True

    def __init__(self, **options):
        super().__init__(PLANS, "2d_cpu", **options)

    def predict_slices(self, masked):
        x = torch.as_tensor(masked)
        ramp = torch.arange(x.shape[2], dtype=torch.float32).view(1, 1, -1, 1) / 100
        column = torch.zeros(x.shape[3]).index_fill_(0, torch.tensor([0]), 0.2).view(1, 1, 1, -1)
        confidence = torch.zeros(len(x), 4, 4)
        confidence[:, 0, 0] = 1.0  # the top-left corner
        return {"reconstruction": x + ramp + column, "confidence": confidence}


def test_mirroring_averages_the_in_plane_flips_and_keys_the_options():
    stack = np.zeros((2, 3, 16, 16), np.float32)
    stack[0, 1] = 0.3
    plain, _ = Ramp(precision="fp32").predict_stack(stack)
    assert plain[0, 1, 15, 5] == pytest.approx(0.45) and plain[0, 1, 0, 0] == pytest.approx(0.5)
    mirrored = Ramp(precision="fp32", mirroring=True)
    assert mirrored.model_info["mirroring"] is True
    output, confidence = mirrored.predict_stack(stack, with_confidence=True)
    # the ramp's flips average to its mean 0.075 at every row; the column mark sits at both edges, halved
    assert np.allclose(output[0, 1, :, 1:15], 0.3 + 0.075) and np.allclose(output[0, 1, :, [0, 15]], 0.475)
    assert not output[:, [0, 2]].any()
    # the confidence is flipped back too: the corner's weight lands in all four corners, a quarter each
    _, unmirrored = Ramp(precision="fp32").predict_stack(stack, with_confidence=True)
    assert unmirrored[1, 0, 0] == pytest.approx(1.0) and unmirrored[1, 15, 15] == pytest.approx(0.0)
    assert confidence[1, 0, 0] == pytest.approx(0.25) and confidence[1, 15, 15] == pytest.approx(0.25)
    assert np.allclose(confidence[1], confidence[1][::-1, ::-1]) and confidence[1, 8, 8] == pytest.approx(0.0)
    options = Ramp().apply_options({"precision": "fp32", "mirroring": True})
    assert options == {"precision": "fp32", "mirroring": True}


def test_batch_size_from_memory_and_its_bounds(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    configuration = PLANS["configurations"]["2d_cpu"]
    # 12 maps x width 8 x 16 x 16 pixels x 4 bytes = 98 kB per slice: the cap of 64 applies.
    assert inference_batch_size(configuration) == slice_predictor.MAX_INFERENCE_BATCH
    paper = {"crop_size": [240, 240], "network": {"posterior_width": 32, "common_width": 96, "decoder_width": 96}}
    assert inference_batch_size(paper) == int(1.5e9 // (12 * 96 * 240 * 240 * 4))  # 5
    assert inference_batch_size(paper, memory_bytes=1.0) == 1
    # On a CPU a cache-sized budget: the paper network one slice at a time, the tiny test network a few dozen.
    assert inference_batch_size(paper, device=torch.device("cpu")) == 1
    real_cpu = {"crop_size": [152, 184], "network": {"posterior_width": 8, "common_width": 16, "decoder_width": 16}}
    assert inference_batch_size(real_cpu, device=torch.device("cpu")) == 1  # 21.5 MB per slice
    small = {"crop_size": [64, 64], "network": {"posterior_width": 8, "common_width": 8, "decoder_width": 8}}
    assert inference_batch_size(small, device=torch.device("cpu")) == int(32e6 // (12 * 8 * 64 * 64 * 4))  # 20
    # The CPU budget is per torch thread: two threads split a batch of two slices of the real-case network.
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert inference_batch_size(real_cpu, device=torch.device("cpu")) == 2
    assert inference_batch_size(paper, device=torch.device("cpu")) == 1
    with pytest.raises(InputError, match="batch size"):
        Recording(batch_size=0)


def test_auto_precision_is_bf16_only_where_native(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(slice_predictor, "native_bf16", lambda device: True)
    assert resolve_inference_precision("auto", cpu) == "bf16"
    predictor = Recording(precision="auto", batch_size=4)
    stack = np.ones((2, 2, 16, 16), np.float32)
    predictor.predict_stack(stack)
    assert predictor.dtypes == [torch.bfloat16] and predictor.model_info["precision"] == "bf16"
    monkeypatch.setattr(slice_predictor, "native_bf16", lambda device: False)
    assert resolve_inference_precision("auto", cpu) == "fp32"
    assert resolve_inference_precision("bf16", cpu) == "bf16"
    with pytest.raises(InputError, match="precision"):
        resolve_inference_precision("fp8", cpu)
