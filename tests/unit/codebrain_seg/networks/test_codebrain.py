"""networks/codebrain.py: the configuration switches, the v1 code layout, the source rules, the blank-F_c control
and the fusion init."""
from __future__ import annotations

import math

import pytest
import torch

from codebrain_seg.networks import (
    CodeBrainConfig,
    PriorEncoder,
    StageOneModel,
    count_parameters,
)
from codebrain_seg.networks.codebrain import balance_fusion_init, choose_sources
from codebrain_seg.networks.nafnet import Decoder, Encoder


def test_config_switches_pair_quantizers_with_their_heads() -> None:
    assert CodeBrainConfig(in_channels=3, quantizer="vq", head="cls", codebook_size=64).num_logits == 64
    assert CodeBrainConfig(in_channels=3, quantizer="continuous", head="regression").num_logits == 6
    for quantizer, head in (("vq", "grading"), ("continuous", "cls"), ("fsq", "regression")):
        with pytest.raises(ValueError, match="head must be one of"):
            CodeBrainConfig(in_channels=3, quantizer=quantizer, head=head)
    with pytest.raises(ValueError, match="quantizer must be one of"):
        CodeBrainConfig(in_channels=3, quantizer="rvq")
    with pytest.raises(ValueError, match="codebook_size"):
        CodeBrainConfig(in_channels=3, quantizer="vq", head="cls", codebook_size=1)
    # configurations stored before the switches existed still load (FSQ, 1024-entry default never used)
    old = {key: value for key, value in CodeBrainConfig(in_channels=3).to_dict().items()
           if key not in ("quantizer", "codebook_size", "commitment_weight")}
    assert CodeBrainConfig.from_dict(old).quantizer == "fsq"


SMALL = dict(posterior_width=4, common_width=4, decoder_width=4, depth=1)


V1_GRID = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0])  # FSQ codes of L = 5 levels


def test_v1_codes_are_one_code_per_modality_on_the_level_grid() -> None:
    torch.manual_seed(0)
    config = CodeBrainConfig(in_channels=4, fsq_levels=(5,) * 7, variant="v1", **SMALL)
    model, prior = StageOneModel(config).eval(), PriorEncoder(config).eval()
    assert (config.num_codes, config.code_channels, config.image_channels) == (4, 7, 1)
    assert config.target_levels == (5,) * 28 and config.num_logits == 28 * 4
    # Modality-agnostic encoders and decoder: one input channel, one output channel.
    assert model.posterior_encoder.stem.in_channels == model.common_encoder.stem.in_channels == 1
    assert model.decoder.head.out_channels == 1 and prior.encoder.stem.in_channels == 4
    x = torch.rand(3, 4, 16, 16)
    with torch.no_grad():
        codes = model.encode_codes(x)
        assert codes.shape == (3, 28, 2, 2)  # N = 4 codes of d = 7 channels, modality-major
        assert torch.isin(codes, V1_GRID).all()
        levels = model.codes_to_levels(codes)
        assert levels.dtype == torch.int64 and int(levels.min()) >= 0 and int(levels.max()) <= 4
        assert torch.equal(model.levels_to_codes(levels), codes)
        for channel in range(4):  # each code is the posterior code of that modality alone
            own, _ = model.encode_modality(x[:, channel:channel + 1])
            assert torch.equal(codes[:, 7 * channel:7 * (channel + 1)], own)
        changed = x.clone()
        changed[:, 2] = torch.rand(3, 16, 16)
        other = model.encode_codes(changed)
        assert torch.equal(other[:, :14], codes[:, :14]) and torch.equal(other[:, 21:], codes[:, 21:])
        predicted = prior.logits_to_levels(prior(x))
        assert predicted.shape == (3, 28, 2, 2) and int(predicted.max()) <= 4
        reconstruction, anchor_code, features = model(x, x, anchor=1, source=3)
        assert reconstruction.shape == (3, 1, 16, 16) and anchor_code.shape == (3, 7, 2, 2)
        assert features.shape == (3, 32, 2, 2)
        # Imputation decodes only the missing modalities, each from its own code.
        available = torch.tensor([True, False, True, False])
        imputed = model.impute_from_codes(codes, x * available.view(1, 4, 1, 1), available,
                                          generator=torch.Generator().manual_seed(0))
        assert imputed.shape == x.shape and float(imputed[:, [0, 2]].abs().max()) == 0.0
    with pytest.raises(ValueError, match="anchor and a different source"):
        model(x, x, anchor=1, source=1)
    with pytest.raises(ValueError, match="at least 2 modalities"):
        CodeBrainConfig(in_channels=1, variant="v1")
    with pytest.raises(ValueError, match="variant must be one of"):
        CodeBrainConfig(in_channels=3, variant="v2")


@pytest.mark.parametrize("quantizer, head, per_code", [("vq", "cls", 1), ("continuous", "regression", 5),
                                                       ("fsq", "cls", 5)])
def test_v1_layout_holds_for_the_other_quantizers_and_heads(quantizer: str, head: str, per_code: int) -> None:
    torch.manual_seed(0)
    config = CodeBrainConfig(in_channels=3, fsq_levels=(5,) * 5, variant="v1", quantizer=quantizer, head=head,
                             codebook_size=16, **SMALL)
    model, prior = StageOneModel(config).eval(), PriorEncoder(config).eval()
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        levels = model.codes_to_levels(model.encode_codes(x))
        assert levels.shape == (2, 3 * per_code, 2, 2)
        predicted = prior.logits_to_levels(prior(x))
        assert predicted.shape == levels.shape
        given = torch.tensor([True, False, False])
        imputed = model.impute_from_codes(model.levels_to_codes(predicted), x * given.view(1, 3, 1, 1).float(), given)
        assert imputed.shape == x.shape and torch.isfinite(imputed).all()


def test_source_rules_pick_available_sources() -> None:
    available = torch.tensor([[True, False, True, True], [False, True, False, False]])
    draws = torch.stack([choose_sources(available, generator=torch.Generator().manual_seed(seed))
                         for seed in range(200)])  # (200, B, C)
    for target in range(4):
        picked = set(draws[:, 0, target].tolist())
        assert picked == {0, 2, 3} - {target}  # every other available sequence, uniformly enough to see all
    assert set(draws[:, 1].flatten().tolist()) == {1}  # the only given sequence serves every target
    relevance = torch.tensor([[0, 30, 20, 10], [5, 0, 5, 5], [25, 10, 0, 40], [35, 20, 30, 0.0]])
    assert choose_sources(available[:1], "relevant", relevance).tolist() == [[3, 0, 3, 2]]
    with pytest.raises(ValueError, match="relevance table"):
        choose_sources(available, "relevant")
    with pytest.raises(ValueError, match="source rule must be one of"):
        choose_sources(available, "best")


# ---- the blank-F_c control and the fusion init ----------------------------------------------------------------


def _model(seed: int = 0, **switches: object) -> StageOneModel:
    torch.manual_seed(seed)
    return StageOneModel(CodeBrainConfig(in_channels=4, **SMALL, **switches)).eval()  # type: ignore[arg-type]


def _same_weights(a: torch.nn.Module, b: torch.nn.Module, skip: tuple[str, ...] = ()) -> bool:
    left, right = a.state_dict(), b.state_dict()
    return left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left if k not in skip)


def test_config_records_the_new_switches_and_old_checkpoints_load() -> None:
    config = CodeBrainConfig(in_channels=3, blank_fc=True, fusion_init="balanced")
    assert CodeBrainConfig.from_dict(config.to_dict()) == config
    assert config.to_dict()["blank_fc"] is True and config.to_dict()["fusion_init"] == "balanced"
    old = {k: v for k, v in CodeBrainConfig(in_channels=3).to_dict().items() if k not in ("blank_fc", "fusion_init")}
    restored = CodeBrainConfig.from_dict(old)  # a checkpoint written before the switches
    assert (restored.blank_fc, restored.fusion_init) == (False, "reference")
    with pytest.raises(ValueError, match="blank_fc .* needs use_fc=True"):
        CodeBrainConfig(in_channels=3, use_fc=False, blank_fc=True)
    with pytest.raises(ValueError, match="fusion_init must be one of"):
        CodeBrainConfig(in_channels=3, fusion_init="xavier")


def test_blank_fc_control_feeds_zeros_to_the_common_encoder_with_the_fc_models_weights() -> None:
    with_fc, blank = _model(), _model(blank_fc=True)
    # the same architecture, parameter count and initial weights for the same seed
    assert count_parameters(blank) == count_parameters(with_fc) > count_parameters(_model(use_fc=False))
    assert _same_weights(blank, with_fc)
    seen: list[torch.Tensor] = []
    blank.common_encoder.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    x_full = torch.rand(2, 4, 16, 16)
    x_masked = x_full * torch.tensor([1.0, 0.0, 1.0, 0.0]).view(1, 4, 1, 1)
    other = torch.rand_like(x_masked)
    with torch.no_grad():
        reconstruction, codes, _ = blank(x_full, x_masked)  # the training pass
        assert len(seen) == 1 and seen[0].shape == x_masked.shape and torch.count_nonzero(seen[0]) == 0
        assert torch.equal(blank(x_full, other)[0], reconstruction)  # nothing of the masked stack gets through
        # the inference path (every predictor decodes through it) is blank too, and it is exactly the F_c model
        # decoding with F_c of zeros
        assert torch.equal(blank.impute_from_codes(codes, x_masked), blank.impute_from_codes(codes, other))
        assert torch.equal(blank.impute_from_codes(codes, x_masked), with_fc.decode(codes, torch.zeros_like(other)))
        assert all(torch.count_nonzero(t) == 0 for t in seen)
        # whereas the F_c model does read the masked stack
        assert not torch.equal(with_fc.decode(codes, x_masked), with_fc.decode(codes, other))
        # v1: F_c of the source sequence is blank as well
        torch.manual_seed(0)
        v1 = StageOneModel(CodeBrainConfig(in_channels=4, fsq_levels=(5,) * 3, variant="v1", blank_fc=True,
                                           **SMALL)).eval()
        assert torch.equal(v1(x_full, x_masked, anchor=1, source=0)[0], v1(x_full, other, anchor=1, source=0)[0])


def test_reference_fusion_init_is_todays_and_balanced_gives_the_codes_the_no_fc_scale() -> None:
    reference, default = _model(fusion_init="reference"), _model()
    assert _same_weights(reference, default)
    # today's init: the same modules built in the same order with nothing done after
    torch.manual_seed(0)
    config = CodeBrainConfig(in_channels=4, **SMALL)
    built = [Encoder(4, 4, 1, out_channels=6), config.build_quantizer(), Encoder(4, 4, 1),
             Decoder(6, 4, 4, 1, fc_channels=config.fc_channels)]
    for module, name in zip(built, ("posterior_encoder", "quantizer", "common_encoder", "decoder")):
        assert _same_weights(module, getattr(reference, name))
    balanced = _model(fusion_init="balanced")
    d, f = 6, config.fc_channels
    scale = math.sqrt((d + f) / d)
    w_reference, w_balanced = reference.decoder.fuse.weight.detach(), balanced.decoder.fuse.weight.detach()
    assert torch.equal(w_balanced[:, :d], w_reference[:, :d] * scale)  # the same draws, only rescaled
    assert torch.equal(w_balanced[:, d:], w_reference[:, d:])  # F_c columns, bias and every other weight unchanged
    assert _same_weights(balanced, reference, skip=("decoder.fuse.weight",))
    # PyTorch draws U(-1/sqrt(fan_in), 1/sqrt(fan_in)): fan-in d without F_c, d + f with it
    no_fc = _model(use_fc=False).decoder.fuse.weight.detach()
    for codes, bound in ((no_fc, 1 / math.sqrt(d)), (w_balanced[:, :d], 1 / math.sqrt(d)),
                         (w_reference[:, :d], 1 / math.sqrt(d + f))):
        assert 0.9 * bound < float(codes.abs().max()) <= bound * (1 + 1e-6)
    assert 0.8 < float(w_balanced[:, :d].std() / no_fc.std()) < 1.25
    # without F_c there is nothing to balance
    assert _same_weights(_model(use_fc=False, fusion_init="balanced"), _model(use_fc=False))
    assert balance_fusion_init(torch.nn.Conv2d(6, 8, 1), 6) == 1.0
