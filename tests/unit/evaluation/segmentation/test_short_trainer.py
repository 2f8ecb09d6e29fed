"""evaluation/segmentation/short_trainer.py: the bf16 autocast forward of the short nnU-Net trainer."""
from __future__ import annotations


def test_short_trainer_bf16_forward_returns_fp32_and_keeps_the_weights():
    import torch

    from evaluation.segmentation.short_trainer import _autocast_forward

    torch.manual_seed(0)
    network = torch.nn.Conv3d(2, 3, 3, padding=1)
    x = torch.randn(1, 2, 8, 8, 8)
    reference = network(x)
    reference.sum().backward()
    reference_grad = network.weight.grad.clone()
    network.zero_grad()
    keys = list(network.state_dict())
    _autocast_forward(network)
    output = network(x)
    assert output.dtype == torch.float32 and output.shape == reference.shape
    assert torch.allclose(output, reference, atol=0.1)  # bf16 rounding only
    assert list(network.state_dict()) == keys and type(network) is torch.nn.Conv3d
    output.sum().backward()
    assert network.weight.grad is not None and network.weight.grad.dtype == torch.float32
    # the fp32 weights get the fp32 gradient up to bf16 rounding
    torch.testing.assert_close(network.weight.grad, reference_grad, rtol=0.02, atol=0.05 * float(
        reference_grad.abs().max()))
