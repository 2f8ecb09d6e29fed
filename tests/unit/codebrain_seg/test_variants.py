"""codebrain_seg/variants.py: loss weights, variant names and checks, and the CodeBrainVariant value object."""
from __future__ import annotations

import argparse

import pytest

from codebrain_seg.errors import InputError
from codebrain_seg.plans import Configuration
from codebrain_seg.variants import (
    CodeBrainVariant,
    ablation_switches,
    check_variant,
    code_levels,
    copedit_ablation,
    copedit_options_ablation,
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


def test_codebrain_variant_tags_and_normalisation() -> None:
    plain = CodeBrainVariant()
    assert plain.tag() == "" and plain.as_options() == {"ablation": "none", "loss_weights": None, "variant": "cvpr",
                                                        "code_dim": None}
    v1 = CodeBrainVariant(variant="v1", code_dim=7)
    assert v1.code_dim is None and v1.tag() == "-v1" and v1 == CodeBrainVariant(variant="v1")  # d = 7 is v1's own
    assert CodeBrainVariant(variant="cvpr", code_dim=7).code_dim == 7  # only v1's default is dropped
    assert CodeBrainVariant(variant="v1", code_dim=5, ablation="no_fc").tag() == "-v1-d5-no_fc"
    weighted = CodeBrainVariant(loss_weights="1,1")
    assert weighted.loss_weights == (1.0, 1.0)
    assert weighted.tag((20.0, 5.0)) == "-lm1-la1" and weighted.tag((1.0, 1.0)) == ""
    assert weighted.weights((20.0, 5.0)) == ((1.0, 1.0), (1.0, 1.0))
    assert CodeBrainVariant(ablation="vq", loss_weights=(10, 2.5)).tag((20.0, 5.0)) == "-vq-lm10-la2.5"
    with pytest.raises(InputError, match="relative to the plans"):
        weighted.tag()


@pytest.mark.parametrize("fields, message", [
    ({"ablation": "fsq"}, "ablation must be one of"),
    ({"variant": "v2"}, "variant must be one of"),
    ({"code_dim": 0}, r"code dimension must be an integer in 1\.\.16"),
    ({"code_dim": 17}, r"code dimension must be an integer in 1\.\.16"),
    ({"code_dim": True}, "code dimension must be an integer"),
    ({"loss_weights": "20"}, "loss weights must be two non-negative numbers"),
    ({"loss_weights": (0, 0)}, "not both 0"),
    ({"seed_index": -1}, "seed index must be an integer >= 0"),
    ({"seed_index": True}, "seed index must be an integer >= 0"),
])
def test_codebrain_variant_rejects_bad_values(fields: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        CodeBrainVariant(**fields)


def test_codebrain_variant_from_args() -> None:
    args = argparse.Namespace(ablation="cls", loss_weights="20,5", variant="v1", code_dim=4)
    assert CodeBrainVariant.from_args(args) == CodeBrainVariant("cls", (20.0, 5.0), "v1", 4)
    # commands without the options (or with None) give the plain method
    assert CodeBrainVariant.from_args(argparse.Namespace()) == CodeBrainVariant()
    assert CodeBrainVariant.from_args(argparse.Namespace(ablation=None, variant=None)) == CodeBrainVariant()


def test_code_levels_and_copedit_options() -> None:
    assert code_levels("cvpr", None, [8, 8, 8, 5, 5, 5]) == (8, 8, 8, 5, 5, 5)
    assert code_levels("cvpr", 4, [8, 8, 8]) == (5, 5, 5, 5) and code_levels("v1", None, [8]) == (5,) * 7
    assert copedit_ablation() == "none" and copedit_ablation("mask", "per_count") == "mask-per_count"
    assert ablation_switches("per_count") == ("learned", "per_count") and ablation_switches("mask") == ("mask",
                                                                                                          "shared")
    assert copedit_options_ablation({"prompts": "mask"}) == "mask"
    with pytest.raises(InputError, match="prompts must be one of"):
        copedit_ablation("text")
    with pytest.raises(InputError, match="CoPeDiT option must be one of"):
        ablation_switches("no_fc")


def test_seed_index_names_a_seed_folder_beyond_the_first_and_the_fc_controls_are_switches() -> None:
    assert variant_name(seed_index=0) == "" and variant_name(seed_index=2) == "-seed2"
    assert variant_name("no_fc", (1.0, 1.0), variant="v1", code_dim=4, seed_index=1) == "-v1-d4-no_fc-lm1-la1-seed1"
    seeded = CodeBrainVariant(ablation="fc_blank", seed_index=3)
    assert seeded.tag() == "-fc_blank-seed3" and CodeBrainVariant(seed_index=0) == CodeBrainVariant()
    # the seed only names the folder: the training switches are the four of today
    assert seeded.as_options() == {"ablation": "fc_blank", "loss_weights": None, "variant": "cvpr", "code_dim": None}
    plans = {"channel_names": ["T1", "T2", "PD"]}
    configuration = {"fsq_levels": [8, 8, 8, 5, 5, 5],
                     "network": {"posterior_width": 4, "common_width": 4, "decoder_width": 4, "depth": 1}}
    blank, balanced = network_config(plans, configuration, "fc_blank"), network_config(plans, configuration,
                                                                                       "fc_balanced")
    assert (blank.use_fc, blank.blank_fc, blank.fusion_init) == (True, True, "reference")
    assert (balanced.use_fc, balanced.blank_fc, balanced.fusion_init) == (True, False, "balanced")
    plain = network_config(plans, configuration)
    assert (plain.blank_fc, plain.fusion_init) == (False, "reference")
