"""codebrain_seg/run/methods.py: the one method registry."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from codebrain_seg.errors import InputError, UnknownNameError
from codebrain_seg.inference.request import ImputationContext
from codebrain_seg.run import methods
from codebrain_seg.run.methods import (
    METHODS,
    Method,
    get_imputer,
    get_method,
    imputation_methods,
    register_method,
    trainable_methods,
)


def test_codebrain_is_registered_lazily():
    assert METHODS["codebrain"].trainable and METHODS["codebrain"].folder_name == "CodeBrain"
    assert callable(METHODS["codebrain"].imputer)


def test_trainable_and_imputation_method_names() -> None:
    assert trainable_methods() == ["codebrain", "copedit", "regression"]
    assert imputation_methods() == sorted(METHODS)
    assert {"zero", "mean", "codebrain", "regression", "copedit", "copedit-mask"} <= set(imputation_methods())
    assert not METHODS["zero"].trainable and not METHODS["copedit-mask"].trainable
    assert {name: METHODS[name].folder_name for name in trainable_methods()} == {
        "codebrain": "CodeBrain", "copedit": "CoPeDiT", "regression": "Regression"}
    assert sorted(METHODS["codebrain"].stages) == [1, 2] and sorted(METHODS["regression"].stages) == [1]
    assert METHODS["codebrain"].shared_stages == {"cls": (1,)}
    assert "no_fc" in METHODS["codebrain"].ablations and "mask" in METHODS["copedit"].ablations


def test_unknown_names_list_the_registered_ones() -> None:
    assert get_method("mean") is METHODS["mean"]
    with pytest.raises(UnknownNameError) as error:
        get_method("magic")
    assert str(error.value) == f"unknown method 'magic'; known: {', '.join(sorted(METHODS))}"
    with pytest.raises(KeyError, match="unknown imputation method 'magic'; known: codebrain, copedit, copedit-mask"):
        get_imputer("magic", ImputationContext(plans={}))


def test_register_method_adds_a_new_name_and_refuses_a_duplicate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(methods, "METHODS", dict(METHODS))
    method = Method("half", lambda context: ("half imputer", context.fold), "half of the mean")
    register_method(method)
    assert methods.get_method("half") is method and "half" in methods.imputation_methods()
    assert "half" not in methods.trainable_methods()
    assert methods.get_imputer("half", ImputationContext(plans={}, fold=3)) == ("half imputer", 3)
    with pytest.raises(InputError, match="method 'zero' is already registered"):
        register_method(Method("zero", lambda context: None))
    assert methods.METHODS["zero"] is METHODS["zero"]


def test_copedit_mask_fixes_the_prompts_option() -> None:
    seen = replace(METHODS["copedit-mask"], imputer=lambda context: context)
    context = seen.build_imputer(ImputationContext(plans={}, options={"prompts": "learned", "ddim_steps": 4}))
    assert context.options == {"prompts": "mask", "ddim_steps": 4}
    plain = replace(METHODS["copedit"], imputer=lambda context: context)
    assert plain.build_imputer(ImputationContext(plans={}, options={"ddim_steps": 4})).options == {"ddim_steps": 4}
    assert METHODS["copedit-mask"].options == {"prompts": "mask"}
    assert METHODS["copedit-mask"].configurations == METHODS["copedit"].configurations == ("3d_copedit",
                                                                                            "3d_copedit_cpu")
    # the configuration resolver sees the fixed option over the caller's
    calls = []
    resolving = replace(METHODS["copedit-mask"], resolve_configuration=lambda *args: calls.append(args) or "3d_x")
    assert resolving.configuration_for("D", 0, "cpu", {"prompts": "learned"}) == "3d_x"
    assert calls == [("D", 0, "cpu", {"prompts": "mask"})]
    assert METHODS["zero"].configuration_for("D", 0) is None


def test_default_configuration_follows_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert METHODS["codebrain"].default_configuration("auto") == "2d_cpu"
    assert METHODS["codebrain"].default_configuration("cuda") == "2d_cpu"  # no GPU: the CPU configuration
    assert METHODS["copedit"].default_configuration() == "3d_copedit_cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert METHODS["codebrain"].default_configuration("auto") == "2d"
    assert METHODS["codebrain"].default_configuration("cpu") == "2d_cpu"
    assert METHODS["copedit"].default_configuration("cuda") == "3d_copedit"
