"""codebrain_seg/plans.py: the read-only Plans / Configuration views on a small plans dict."""
from __future__ import annotations

import pytest

from codebrain_seg.errors import InputError, UnknownNameError
from codebrain_seg.plans import PLANS_NAME, Configuration, LossWeights, Plans


def _plans() -> dict:
    return {
        "plans_name": "codebrainPlans", "plans_version": 1, "channel_names": ["T1", "T2", "PD"],
        "normalization": {"upper_percentile": 99.5},
        "intensity_reference": {"T1": {"median_p99_5": 812.5}, "T2": {"median_p99_5": 640.0},
                                "PD": {"median_p99_5": 1000}},
        "configurations": {
            "2d_cpu": {"data_identifier": "codebrainPlans_2d_cpu", "crop_size": [152.0, 184], "slicing_axis": 2,
                       "fsq_levels": [8, 8, 8, 5, 5, 5], "batch_size": 4, "evaluation_slices": 80,
                       "network": {"posterior_width": 8, "depth": 1},
                       "training_slices": {"min_brain_fraction": 0.05},
                       "optimisation": {"stage1": {"iterations": 1200}, "generator_optimizer": {"lr": 2e-4},
                                        "gradient_clip": 1.0,
                                        "loss": {"lambda_missing": 20, "lambda_available": 5,
                                                 "adversarial_weight": 0.1}}},
            "3d_copedit_cpu": {"kind": "3d_volume", "target_size": [64, 64, 32], "vq_codebook_size": 512},
        },
    }


def test_plans_properties() -> None:
    data = _plans()
    plans = Plans(data)
    assert plans.plans_name == PLANS_NAME == "codebrainPlans" and plans.version == 1
    assert plans.channel_names == ["T1", "T2", "PD"] and plans.num_channels == 3
    assert plans.upper_percentile == 99.5
    assert plans.reference_upper("T2") == 640.0 and plans.reference_uppers == [812.5, 640.0, 1000.0]
    assert plans.configuration_names == ["2d_cpu", "3d_copedit_cpu"]
    assert plans.has_configuration("2d_cpu") and not plans.has_configuration("2d")
    assert Plans({}).plans_name == "codebrainPlans" and Plans({}).configuration_names == []
    # a view, not a copy; read-only
    data["channel_names"].append("FLAIR")
    assert plans.num_channels == 4
    with pytest.raises(TypeError):
        plans.data["plans_name"] = "other"  # type: ignore[index]


def test_configuration_properties() -> None:
    config = Plans(_plans()).configuration("2d_cpu")
    assert config.name == "2d_cpu" and config.kind == "2d_slices"
    assert config.data_identifier == "codebrainPlans_2d_cpu"
    assert config.crop_size == [152, 184] and all(type(s) is int for s in config.crop_size)
    assert config.slicing_axis == 2 and config.fsq_levels == [8, 8, 8, 5, 5, 5] and config.batch_size == 4
    assert config.evaluation_slices == 80 and config.network == {"posterior_width": 8, "depth": 1}
    assert config.min_brain_fraction == 0.05 and config.vq_codebook_size is None
    assert config.stage(1) == {"iterations": 1200} and config.optimizer("generator_optimizer") == {"lr": 2e-4}
    assert config.optimisation_option("gradient_clip") == 1.0
    assert config.optimisation_option("augmentation", "default") == "default"
    assert config.loss == LossWeights(20.0, 5.0, 0.1, 0.0) and config.loss.reconstruction == (20.0, 5.0)
    volume = Plans(_plans()).configuration("3d_copedit_cpu")
    assert volume.kind == "3d_volume" and volume.target_size == [64, 64, 32] and volume.vq_codebook_size == 512
    assert volume.min_brain_fraction == 0.0


def test_missing_field_is_an_input_error_naming_the_field() -> None:
    volume = Plans(_plans()).configuration("3d_copedit_cpu")
    with pytest.raises(InputError, match=r"plans configuration '3d_copedit_cpu' has no 'fsq_levels' field: .*"
                                         r"codebrain_plan_and_preprocess --replan"):
        volume.fsq_levels
    with pytest.raises(InputError, match="has no 'data_identifier' field"):
        volume.data_identifier
    config = Plans(_plans()).configuration("2d_cpu")
    with pytest.raises(InputError, match="plans configuration '2d_cpu' plans no stage 2"):
        config.stage(2)
    with pytest.raises(InputError, match="has no optimiser 'dit_optimizer'"):
        config.optimizer("dit_optimizer")
    with pytest.raises(InputError, match="no intensity reference for sequence 'FLAIR'"):
        Plans(_plans()).reference_upper("FLAIR")
    assert Configuration({}, "bare").kind == "2d_slices"


def test_unknown_configuration_lists_the_planned_ones() -> None:
    with pytest.raises(UnknownNameError) as error:
        Plans(_plans()).configuration("2d")
    assert str(error.value) == ("configuration '2d' is not in the plans; planned: 2d_cpu, 3d_copedit_cpu (plan it "
                                "with codebrain_plan_and_preprocess -c 2d)")
