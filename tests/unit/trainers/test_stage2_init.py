"""CodeBrain Stage II's warm start: the prior encoder begins as Stage I's common encoder, its code head fresh."""
from __future__ import annotations

import pytest
import torch

from codebrain_seg.errors import InputError
from codebrain_seg.networks import CodeBrainConfig, PriorEncoder, StageOneModel
from trainers.options import TrainingOptions
from trainers.stage2 import warm_start

SMALL = {"posterior_width": 4, "common_width": 4, "decoder_width": 4, "depth": 1}


def _pair(**config) -> tuple[StageOneModel, PriorEncoder]:
    torch.manual_seed(0)
    generator = StageOneModel(CodeBrainConfig(in_channels=4, **SMALL, **config))
    return generator, PriorEncoder(CodeBrainConfig(in_channels=4, **SMALL, **config))


def test_warm_start_copies_the_common_encoder_and_keeps_the_head():
    generator, prior = _pair()
    head = prior.encoder.projection.weight.detach().clone()
    assert warm_start(prior, generator)
    source = generator.common_encoder.state_dict()
    target = prior.encoder.state_dict()
    assert set(target) - set(source) == {"projection.weight", "projection.bias"}
    assert all(torch.equal(source[key], target[key]) for key in source)
    assert torch.equal(prior.encoder.projection.weight, head)
    x = torch.rand(1, 4, 16, 16)
    with torch.no_grad():  # the features before the head are E_c's: the same F_c
        assert torch.allclose(prior.encoder.projection(generator.common_features(x)), prior(x), atol=1e-6)


@pytest.mark.parametrize("config", [{"use_fc": False}, {"variant": "v1"}])
def test_no_warm_start_without_a_matching_common_encoder(config):
    generator, prior = _pair(**config)
    before = {key: value.clone() for key, value in prior.state_dict().items()}
    assert not warm_start(prior, generator)
    assert all(torch.equal(before[key], value) for key, value in prior.state_dict().items())


def test_prior_init_option_is_checked():
    assert TrainingOptions().prior_init == "common_encoder"
    with pytest.raises(InputError, match="--prior-init must be one of common_encoder, random"):
        TrainingOptions(prior_init="imagenet")
