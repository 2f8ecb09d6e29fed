"""evaluation/ablation/run.py: the models an ablation needs resolve to the trainers' results folders."""
from __future__ import annotations

from pathlib import Path

import pytest
from conftest import TINY_DEMO_CONFIGURATION

from evaluation.ablation import run
from evaluation.ablation.groups import (
    PLAIN,
    Variant,
    parse_groups,
)

CONFIG = TINY_DEMO_CONFIGURATION


def _plans(lambdas: tuple[float, float] = (20.0, 5.0)) -> dict:
    loss = {"lambda_missing": lambdas[0], "lambda_available": lambdas[1]}
    return {"plans_name": "codebrainPlans", "configurations": {CONFIG: {"optimisation": {"loss": loss}}}}


def test_models_resolve_to_the_trainers_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("codebrain_results", str(tmp_path))
    models = run.resolve_models(parse_groups("rec_fc,grading,loss,quantiser,weights"), "Dataset976_X", _plans(),
                                CONFIG, 0)
    root = tmp_path / "Dataset976_X"

    def folder(name: str) -> Path:
        return root / f"{name}__codebrainPlans__{CONFIG}" / "fold_0"

    names = {variant: model.folder for variant, model in models.items()}
    assert names[PLAIN] == folder("CodeBrain")
    assert names[Variant(ablation="no_fc")] == folder("CodeBrain-no_fc")
    assert names[Variant(ablation="vq")] == folder("CodeBrain-vq")
    assert names[Variant(loss_weights=(10.0, 5.0))] == folder("CodeBrain-lm10-la5")
    assert names[Variant(loss_weights=(20.0, 7.0))] == folder("CodeBrain-lm20-la7")
    # the plans' own pair is the plain method: one model, trained once, with the stages of both uses
    assert models[Variant(loss_weights=(20.0, 5.0))] is models[PLAIN] and models[PLAIN].stages == (1, 2)
    # classification trains its own Stage II on the plain method's Stage I
    cls = models[Variant(ablation="cls")]
    assert cls.stage_dirs == {1: folder("CodeBrain") / "stage1", 2: folder("CodeBrain-cls") / "stage2"}
    assert len({m.folder for m in models.values()}) == 10  # plain, 5 ablations, 4 weight overrides
    # with other planned weights, (20, 5) becomes an override with its own folder
    other = run.resolve_models(parse_groups("weights"), "Dataset976_X", _plans((1.0, 1.0)), CONFIG, 0)
    assert other[Variant(loss_weights=(20.0, 5.0))].folder == folder("CodeBrain-lm20-la5")


def test_v1_models_resolve_to_the_variant_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("codebrain_results", str(tmp_path))
    models = run.resolve_models(parse_groups("variant,dim"), "Dataset976_X", _plans(), CONFIG, 0)
    names = {v: m.folder.parent.name for v, m in models.items()}
    assert names[Variant(variant="v1")] == f"CodeBrain-v1__codebrainPlans__{CONFIG}"
    assert names[Variant(variant="v1", code_dim=4)] == f"CodeBrain-v1-d4__codebrainPlans__{CONFIG}"
    # d = 7 is v1's own code dimension: the same model as the variant group's v1 row
    assert models[Variant(variant="v1", code_dim=7)] is models[Variant(variant="v1")]
