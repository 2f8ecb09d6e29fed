"""codebrain_seg/variants.py: loss weights, variant names and checks, and the CodeBrainVariant value object."""
from __future__ import annotations

import pytest

from codebrain_seg.plans import Configuration
from codebrain_seg.variants import (
    check_variant,
    parse_loss_weights,
    resolve_loss_weights,
    variant_name,
)
from trainers.stage1 import network_config


def test_loss_weight_parsing_and_folder_names() -> None:
    assert parse_loss_weights("20,5") == (20.0, 5.0) and parse_loss_weights(" 1 , 1 ") == (1.0, 1.0)
    for bad in ("20", "1,2,3", "a,b", "-1,5", "0,0", "nan,1"):
        with pytest.raises(ValueError, match="lambda_m,lambda_a"):
            parse_loss_weights(bad)
    planned = Configuration({"optimisation": {"loss": {"lambda_missing": 20.0, "lambda_available": 5.0}}}).loss.reconstruction
    assert resolve_loss_weights(None, planned) == ((20.0, 5.0), None)
    assert resolve_loss_weights("20,5", planned) == ((20.0, 5.0), None)  # the plans' pair: the plain run
    assert resolve_loss_weights((1, 1), planned) == ((1.0, 1.0), (1.0, 1.0))
    assert variant_name() == "" and variant_name("vq") == "-vq"
    assert variant_name("none", (1.0, 1.0)) == "-lm1-la1"
    assert variant_name("continuous", (10.0, 2.5)) == "-continuous-lm10-la2.5"


def test_variant_names_levels_and_checks() -> None:
    assert variant_name() == "" and variant_name(variant="v1") == "-v1"
    assert variant_name(code_dim=5) == "-d5" and variant_name(variant="v1", code_dim=5) == "-v1-d5"
    assert variant_name(variant="v1", code_dim=7) == "-v1"  # v1's own d adds nothing
    assert variant_name("no_fc", (1.0, 1.0), variant="v1", code_dim=4) == "-v1-d4-no_fc-lm1-la1"
    assert check_variant("v1", 7) == ("v1", None) and check_variant("cvpr", 6) == ("cvpr", 6)
    for bad in (0, 17, 5.0, True):
        with pytest.raises(ValueError, match="code dimension must be an integer"):
            variant_name(code_dim=bad)
    with pytest.raises(ValueError, match="variant must be one of"):
        variant_name(variant="v2")
    plans = {"channel_names": ["T1", "T2", "PD"]}
    configuration = {"fsq_levels": [8, 8, 8, 5, 5, 5],
                     "network": {"posterior_width": 4, "common_width": 4, "decoder_width": 4, "depth": 1}}
    assert network_config(plans, configuration).fsq_levels == (8, 8, 8, 5, 5, 5)
    assert network_config(plans, configuration, code_dim=4).fsq_levels == (5, 5, 5, 5)
    v1 = network_config(plans, configuration, variant="v1")
    assert (v1.variant, v1.fsq_levels) == ("v1", (5,) * 7)
    assert network_config(plans, configuration, "no_fc", "v1", 5).fsq_levels == (5,) * 5
