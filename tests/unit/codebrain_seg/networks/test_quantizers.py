"""networks/quantizers.py: the VQ codebook and the continuous code of the ablations, and every quantiser's Stage-II
outputs as decoder codes."""
from __future__ import annotations

import pytest
import torch

from codebrain_seg.networks import (
    CodeBrainConfig,
    ContinuousCode,
    NAFBlock,
    PriorEncoder,
    StageOneModel,
    VectorQuantizer,
)

SMALL = dict(posterior_width=4, common_width=4, decoder_width=4, depth=1)


def _open_residuals(model: torch.nn.Module) -> None:
    """New NAFBlocks are identities (beta = gamma = 0); open them so gradients reach every convolution."""
    for block in model.modules():
        if isinstance(block, NAFBlock):
            torch.nn.init.constant_(block.beta, 0.1)
            torch.nn.init.constant_(block.gamma, 0.1)


def test_vq_indices_are_in_range_and_codes_are_codebook_entries() -> None:
    torch.manual_seed(0)
    vq = VectorQuantizer(codebook_size=16, dim=6)
    z = torch.randn(3, 6, 5, 4) * 3
    codes, loss = vq.quantize_with_loss(z)
    indices = vq.codes_to_levels(codes)
    assert indices.shape == (3, 1, 5, 4) and indices.dtype == torch.int64
    assert int(indices.min()) >= 0 and int(indices.max()) < 16
    assert codes.shape == z.shape and codes.dtype == torch.float32
    # every code vector is exactly one codebook row, the one nearest to tanh(z)
    vectors = codes.movedim(1, -1).reshape(-1, 6)
    assert torch.equal(vectors, vq.codebook.detach()[indices.flatten()])
    bounded = torch.tanh(z).movedim(1, -1).reshape(-1, 6)
    assert torch.equal(indices.flatten(), torch.cdist(bounded, vq.codebook.detach()).argmin(dim=1))
    assert torch.equal(vq.levels_to_codes(indices), codes)
    # codebook + commitment terms: both are the mean squared distance of tanh(z) to its entry in value
    distance = (torch.tanh(z) - codes).square().mean()
    assert loss.dim() == 0 and float(distance) > 0
    torch.testing.assert_close(loss.detach(), (1 + vq.commitment_weight) * distance)
    with pytest.raises(ValueError, match="codebook indices"):
        vq.levels_to_codes(torch.full((1, 1, 2, 2), 16))
    with pytest.raises(ValueError, match="6 channels"):
        vq.quantize(torch.randn(1, 5, 2, 2))


def test_vq_straight_through_gradient_reaches_the_encoder_and_the_loss_the_codebook() -> None:
    torch.manual_seed(0)
    model = StageOneModel(CodeBrainConfig(in_channels=3, quantizer="vq", head="cls", codebook_size=16, **SMALL))
    _open_residuals(model)
    x = torch.rand(2, 3, 16, 16)
    reconstruction, codes, _, vq_loss = model(x, x * torch.tensor([1.0, 0.0, 1.0]).view(1, 3, 1, 1),
                                              with_quantizer_loss=True)
    reconstruction.square().mean().backward(retain_graph=True)
    # The reconstruction reaches the posterior encoder through the straight-through estimator, not the codebook.
    assert model.posterior_encoder.stem.weight.grad.abs().sum() > 0
    assert model.quantizer.codebook.grad is None
    model.zero_grad()
    vq_loss.backward()
    assert model.quantizer.codebook.grad.abs().sum() > 0  # codebook term
    assert model.posterior_encoder.stem.weight.grad.abs().sum() > 0  # commitment term


def test_vq_commitment_loss_decreases_on_a_fixed_batch() -> None:
    torch.manual_seed(0)
    encoder = torch.nn.Conv2d(3, 6, kernel_size=1)
    vq = VectorQuantizer(codebook_size=8, dim=6)
    x = torch.randn(4, 3, 6, 6)
    optimizer = torch.optim.Adam([*encoder.parameters(), *vq.parameters()], lr=0.02)

    def commitment() -> float:
        with torch.no_grad():
            bounded = vq.bound(encoder(x))
            return float((bounded - vq.levels_to_codes(vq.codes_to_levels(bounded))).square().mean())

    before = commitment()
    for _ in range(30):
        _, loss = vq.quantize_with_loss(encoder(x))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert commitment() < 0.5 * before, (before, commitment())


def test_continuous_code_is_the_bounded_encoder_output() -> None:
    torch.manual_seed(0)
    model = StageOneModel(CodeBrainConfig(in_channels=3, quantizer="continuous", head="regression", **SMALL))
    assert isinstance(model.quantizer, ContinuousCode)
    x = torch.rand(2, 3, 16, 16) * 4
    with torch.no_grad():
        codes = model.encode_codes(x)
        torch.testing.assert_close(codes, torch.tanh(model.posterior_encoder(x)))
    assert float(codes.abs().max()) < 1.0
    assert torch.equal(model.codes_to_levels(codes), codes) and torch.equal(model.levels_to_codes(codes), codes)
    prior = PriorEncoder(model.config)
    with torch.no_grad():
        predicted = prior.logits_to_levels(prior(x))
    assert predicted.shape == codes.shape and predicted.dtype == torch.float32
    assert float(predicted.abs().max()) <= 1.0


@pytest.mark.parametrize("quantizer, head", [("fsq", "grading"), ("fsq", "cls"), ("vq", "cls"),
                                             ("continuous", "regression")])
def test_stage_two_outputs_become_decoder_codes_for_every_quantizer(quantizer: str, head: str) -> None:
    """The predictor's path: prior logits -> logits_to_levels -> quantizer.levels_to_codes -> decode."""
    torch.manual_seed(0)
    config = CodeBrainConfig(in_channels=3, quantizer=quantizer, head=head, codebook_size=16, **SMALL)
    model, prior = StageOneModel(config).eval(), PriorEncoder(config).eval()
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        levels = prior.logits_to_levels(prior(x))
        codes = model.quantizer.levels_to_codes(levels)
        oracle = model.encode_codes(x)
        assert codes.shape == oracle.shape == (2, 6, 2, 2)
        assert model.decode(codes, x).shape == x.shape
        # oracle codes survive the round trip through the Stage-II targets
        assert torch.equal(model.levels_to_codes(model.codes_to_levels(oracle)), oracle)
    expected_logits = {"grading": 33, "cls": 39 if quantizer == "fsq" else 16, "regression": 6}[head]
    assert prior(x).shape[1] == config.num_logits == expected_logits
