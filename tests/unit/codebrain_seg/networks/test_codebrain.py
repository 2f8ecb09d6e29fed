"""networks/codebrain.py: the configuration switches, the v1 code layout and the source rules."""
from __future__ import annotations

import pytest
import torch

from codebrain_seg.networks import (
    CodeBrainConfig,
    PriorEncoder,
    StageOneModel,
)
from codebrain_seg.networks.codebrain import choose_sources


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
