"""The device: memory order of the 2D networks (kept through a reshape) and the oneDNN cap for 3D training."""
from __future__ import annotations

import os

import pytest
import torch

from codebrain_seg.device import memory_format_of, preferred_memory_format


@pytest.mark.parametrize("capability,expected", [("AVX512", torch.channels_last), ("AVX512_BF16", torch.channels_last),
                                                 ("AVX2", torch.contiguous_format),
                                                 ("DEFAULT", torch.contiguous_format)])
def test_cpu_order_follows_the_vector_extension(capability, expected, monkeypatch):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    assert preferred_memory_format(torch.device("cpu")) == expected


def test_cuda_prefers_channels_last():
    assert preferred_memory_format(torch.device("cuda")) == torch.channels_last


def test_memory_format_of_reads_the_layout():
    x = torch.rand(2, 3, 4, 5)
    assert memory_format_of(x) == torch.contiguous_format
    assert memory_format_of(x.contiguous(memory_format=torch.channels_last)) == torch.channels_last
    assert memory_format_of(torch.rand(2, 1, 4, 5).contiguous(memory_format=torch.channels_last)) == \
        torch.contiguous_format  # one channel: both layouts are the same, the default is reported


@pytest.mark.parametrize("amx", [True, False])
def test_onednn_is_capped_below_amx_for_3d_training_only_on_amx_and_never_over_the_users_choice(monkeypatch, amx):
    from codebrain_seg.device import ONEDNN_3D_SAFE_ISA, avoid_amx_for_3d_training

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert avoid_amx_for_3d_training() is amx
    assert os.environ.get("ONEDNN_MAX_CPU_ISA") == (ONEDNN_3D_SAFE_ISA if amx else None)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert avoid_amx_for_3d_training() is False and os.environ["ONEDNN_MAX_CPU_ISA"] == "AVX2"
