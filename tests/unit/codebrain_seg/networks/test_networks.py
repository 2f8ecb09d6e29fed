"""NAFNet blocks, CodeBrain Stage-I/II networks and the PatchGAN: shapes, parameter counts, config, gradients."""
from __future__ import annotations

import pytest
import torch

from codebrain_seg.networks import (
    CodeBrainConfig,
    Decoder,
    Encoder,
    LayerNorm2d,
    NAFBlock,
    PatchDiscriminator,
    PriorEncoder,
    StageOneModel,
    count_parameters,
)

SMALL = dict(posterior_width=4, common_width=4, decoder_width=4, depth=1)


def _within(measured: int, reference: float, tolerance: float = 0.01) -> bool:
    return abs(measured - reference) <= tolerance * reference


# ---- building blocks -----------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 16, 96])
def test_nafblock_parameter_formula(channels: int) -> None:
    assert count_parameters(NAFBlock(channels)) == 7 * channels**2 + 33 * channels


def test_new_nafblock_is_identity_and_learns() -> None:
    torch.manual_seed(0)
    block = NAFBlock(8)
    x = torch.randn(2, 8, 6, 6)
    assert torch.equal(block(x), x)  # beta = gamma = 0
    block(x).square().sum().backward()
    assert block.beta.grad.abs().sum() > 0 and block.gamma.grad.abs().sum() > 0


def test_layernorm2d_normalises_each_pixel_over_channels() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 5, 3, 4) * 3 + 1
    y = LayerNorm2d(5)(x)
    mean = x.mean(dim=1, keepdim=True)
    var = x.var(dim=1, unbiased=False, keepdim=True)
    torch.testing.assert_close(y, (x - mean) / torch.sqrt(var + 1e-6))
    # channels-last input gives the same values and stays channels-last
    y_last = LayerNorm2d(5)(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(y_last, y)
    assert y_last.is_contiguous(memory_format=torch.channels_last) and y.is_contiguous()


def test_layernorm2d_in_bf16_stays_bf16_with_fp32_statistics() -> None:
    torch.manual_seed(0)
    norm = LayerNorm2d(6)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2.0)
        norm.bias.uniform_(-1.0, 1.0)
    x = (torch.randn(2, 6, 5, 7) * 3 + 40).contiguous(memory_format=torch.channels_last)  # large mean
    rounded = x.to(torch.bfloat16)
    expected = norm(rounded.float())  # fp32 arithmetic on the same (bf16-rounded) input
    for layout in (torch.channels_last, torch.contiguous_format):  # fused kernel / written-out fallback
        y = norm(rounded.contiguous(memory_format=layout))
        assert y.dtype == torch.bfloat16 and y.is_contiguous(memory_format=layout)
        # only the output's rounding (8 significant bits, |y| < 6): statistics of bf16 arithmetic on a mean
        # of 40 would be off by up to 0.1
        torch.testing.assert_close(y.float(), expected, atol=0.03, rtol=0.01)


def test_nafblock_under_bf16_autocast_keeps_a_bf16_residual_stream() -> None:
    """fp32 beta / gamma / affine terms must not promote the block's output (and the next block's work) to fp32."""
    torch.manual_seed(0)
    block = NAFBlock(8).to(memory_format=torch.channels_last)
    with torch.no_grad():
        block.beta.fill_(0.5)
        block.gamma.fill_(0.5)
    x = torch.randn(2, 8, 12, 12).contiguous(memory_format=torch.channels_last)
    expected = block(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = block(x.to(torch.bfloat16))
    assert y.dtype == torch.bfloat16 and y.is_contiguous(memory_format=torch.channels_last)
    error = (y.float() - expected).square().mean() / expected.square().mean()
    assert error < 1e-3, f"relative squared error {error:.2e}"
    y.float().square().sum().backward()
    assert block.beta.grad.dtype == torch.float32 and block.beta.grad.abs().sum() > 0
    assert block.norm1.weight.grad.dtype == torch.float32 and block.norm1.weight.grad.abs().sum() > 0


def test_encoder_and_decoder_shapes_and_widths() -> None:
    encoder = Encoder(in_channels=3, width=4, depth=2)
    assert encoder.out_channels == 32
    features = encoder(torch.rand(1, 3, 48, 64))
    assert features.shape == (1, 32, 6, 8)
    projected = Encoder(in_channels=3, width=4, depth=0, out_channels=6)(torch.rand(1, 3, 16, 16))
    assert projected.shape == (1, 6, 2, 2)
    decoder = Decoder(code_channels=6, out_channels=3, width=4, depth=1, fc_channels=32)
    assert decoder.fuse.out_channels == 64  # 16 * width at H/8
    assert [stage[2].conv3.out_channels for stage in decoder.up] == [16, 8, 4]  # 4w, 2w, w
    assert decoder(torch.rand(1, 6, 6, 8), features).shape == (1, 3, 48, 64)


def test_decoder_without_common_features() -> None:
    decoder = Decoder(code_channels=6, out_channels=2, width=4, depth=1, fc_channels=0)
    assert decoder.fuse.in_channels == 6
    assert decoder(torch.rand(1, 6, 2, 2)).shape == (1, 2, 16, 16)
    with pytest.raises(ValueError, match="without F_c"):
        decoder(torch.rand(1, 6, 2, 2), torch.rand(1, 8, 2, 2))
    with_fc = Decoder(code_channels=6, out_channels=2, width=4, depth=1, fc_channels=8)
    with pytest.raises(ValueError, match="F_c"):
        with_fc(torch.rand(1, 6, 2, 2))
    with pytest.raises(ValueError, match="F_c must be"):
        with_fc(torch.rand(1, 6, 2, 2), torch.rand(1, 8, 3, 3))


# ---- CodeBrain models ----------------------------------------------------------------------------------


def test_stage_one_shapes_on_a_240_slice() -> None:
    torch.manual_seed(0)
    config = CodeBrainConfig(in_channels=4, **SMALL)
    model = StageOneModel(config)
    x_full = torch.rand(1, 4, 240, 240)
    x_masked = x_full * torch.tensor([1.0, 0.0, 1.0, 0.0]).view(1, 4, 1, 1)
    with torch.no_grad():
        reconstruction, codes, common = model(x_full, x_masked)
    assert codes.shape == (1, 6, 30, 30)
    assert common.shape == (1, 8 * 4, 30, 30)
    assert reconstruction.shape == (1, 4, 240, 240)
    fsq = model.quantizer
    assert torch.equal(fsq.levels_to_codes(fsq.codes_to_levels(codes)), codes)  # on the grid
    with torch.no_grad():
        assert torch.equal(model.decode(codes, x_masked), reconstruction)
        assert torch.equal(model.decode(codes, common_features=common), reconstruction)


def test_stage_one_backward_reaches_every_encoder_and_channels_last() -> None:
    torch.manual_seed(0)
    model = StageOneModel(CodeBrainConfig(in_channels=3, **SMALL)).to(memory_format=torch.channels_last)
    for block in model.modules():  # open the residual branches so gradients reach the convolutions
        if isinstance(block, NAFBlock):
            torch.nn.init.constant_(block.beta, 0.1)
            torch.nn.init.constant_(block.gamma, 0.1)
    x_full = torch.rand(2, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    x_masked = x_full * torch.tensor([1.0, 0.0, 1.0]).view(1, 3, 1, 1)
    reconstruction, codes, _ = model(x_full, x_masked)
    reconstruction.square().mean().backward()
    assert model.posterior_encoder.stem.weight.grad.abs().sum() > 0  # straight-through keeps E_post trainable
    assert model.common_encoder.stem.weight.grad.abs().sum() > 0
    assert model.decoder.head.weight.grad.abs().sum() > 0


def test_no_fc_ablation_builds_no_common_encoder() -> None:
    model = StageOneModel(CodeBrainConfig(in_channels=2, use_fc=False, **SMALL))
    assert model.common_encoder is None
    x = torch.rand(1, 2, 16, 16)
    reconstruction, codes, common = model(x, x * 0)
    assert common is None and codes.shape == (1, 6, 2, 2) and reconstruction.shape == (1, 2, 16, 16)
    assert model.decode(codes).shape == (1, 2, 16, 16)


def test_prior_encoder_heads() -> None:
    x = torch.rand(2, 4, 24, 24)
    grading = PriorEncoder(CodeBrainConfig(in_channels=4, **SMALL))
    logits = grading(x)
    assert logits.shape == (2, 33, 3, 3)
    levels = grading.logits_to_levels(logits)
    assert levels.shape == (2, 6, 3, 3)
    classes = PriorEncoder(CodeBrainConfig(in_channels=4, head="cls", **SMALL))
    class_logits = classes(x)
    assert class_logits.shape == (2, 39, 3, 3)
    levels = classes.logits_to_levels(class_logits)
    assert int(levels[:, :3].max()) <= 7 and int(levels[:, 3:].max()) <= 4
    # 'expected': fractional FSQ levels within each channel's range, near the count where the head is sure
    expected = grading.logits_to_levels(logits.detach(), "expected")
    assert expected.dtype == torch.float32 and expected.shape == (2, 6, 3, 3)
    assert float(expected.min()) >= 0 and float(expected[:, :3].max()) <= 7 and float(expected[:, 3:].max()) <= 4
    assert not torch.equal(expected, expected.round())
    with pytest.raises(ValueError, match="code decoding must be one of"):
        grading.logits_to_levels(logits, "mean")
    vq = PriorEncoder(CodeBrainConfig(in_channels=4, quantizer="vq", head="cls", codebook_size=16, **SMALL))
    vq_logits = vq(x)
    assert torch.equal(vq.logits_to_levels(vq_logits, "expected"), vq.logits_to_levels(vq_logits))  # unordered


def test_inputs_must_be_divisible_by_eight() -> None:
    model = StageOneModel(CodeBrainConfig(in_channels=2, **SMALL))
    with pytest.raises(ValueError, match="divisible by 8"):
        model(torch.rand(1, 2, 20, 16), torch.rand(1, 2, 20, 16))
    with pytest.raises(ValueError, match=r"\(B, 2, H, W\)"):
        model(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16))


def test_paper_configuration_parameter_counts() -> None:
    config = CodeBrainConfig(in_channels=4)  # BraTS: 4 modalities, paper widths
    model = StageOneModel(config)
    parts = {
        "posterior": (count_parameters(model.posterior_encoder), 3.136e6),
        "common": (count_parameters(model.common_encoder), 27.855e6),
        "decoder": (count_parameters(model.decoder), 104.696e6),
        "generator": (count_parameters(model), 135.69e6),
        "prior": (count_parameters(PriorEncoder(config)), 27.880e6),
        "discriminator": (count_parameters(PatchDiscriminator(4)), 2.794e6),
    }
    for name, (measured, reference) in parts.items():
        assert _within(measured, reference), f"{name}: {measured} parameters, spec {reference:.0f}"
    # exact values of this implementation (regression guard)
    assert parts["generator"][0] == 135_687_082
    assert parts["prior"][0] == 27_880_161
    assert parts["discriminator"][0] == 2_794_432


def test_ixi_discriminator_and_decoder_counts() -> None:
    assert _within(count_parameters(PatchDiscriminator(3)), 2.784e6)
    assert _within(count_parameters(Decoder(6, 3, width=96, depth=6, fc_channels=768)), 104.695e6)


# ---- discriminator -------------------------------------------------------------------------------------


def test_discriminator_output_grid() -> None:
    discriminator = PatchDiscriminator(4)
    assert discriminator(torch.rand(1, 4, 256, 256), torch.rand(1, 4, 256, 256)).shape == (1, 4, 16, 16)
    assert discriminator(torch.rand(2, 4, 240, 240), torch.rand(2, 4, 240, 240)).shape == (2, 4, 15, 15)
    last = discriminator.model[-1]
    assert last.bias is None and last.kernel_size == (4, 4)
    with pytest.raises(ValueError, match="candidate and condition"):
        discriminator(torch.rand(1, 4, 64, 64), torch.rand(1, 3, 64, 64))


# ---- config --------------------------------------------------------------------------------------------


def test_config_round_trip_and_validation() -> None:
    config = CodeBrainConfig(in_channels=3, head="cls", use_fc=False, depth=2)
    values = config.to_dict()
    assert values["fsq_levels"] == [8, 8, 8, 5, 5, 5]
    assert CodeBrainConfig.from_dict(values) == config
    assert config.num_logits == 39 and config.fc_channels == 0 and config.code_channels == 6
    assert CodeBrainConfig(in_channels=3).num_logits == 33
    with pytest.raises(ValueError, match="unknown CodeBrainConfig keys"):
        CodeBrainConfig.from_dict({"in_channels": 3, "width": 8})
    with pytest.raises(ValueError, match="in_channels"):
        CodeBrainConfig.from_dict({})
    with pytest.raises(ValueError, match="head"):
        CodeBrainConfig(in_channels=3, head="regression")
    with pytest.raises(ValueError, match="fsq_levels"):
        CodeBrainConfig(in_channels=3, fsq_levels=(8, 1))
    with pytest.raises(ValueError, match="decoder_width"):
        CodeBrainConfig(in_channels=3, decoder_width=0)
