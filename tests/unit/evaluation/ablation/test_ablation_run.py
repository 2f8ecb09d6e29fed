"""evaluation/ablation/run.py: the models an ablation needs resolve to the trainers' results folders."""
from __future__ import annotations

from pathlib import Path

import pytest
from conftest import TINY_DEMO_CONFIGURATION

from evaluation.ablation import run
from evaluation.ablation.groups import (
    PLAIN,
    Variant,
    evaluations,
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


def test_seeds_resolve_to_seed_folders_with_seed_zero_in_todays(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                 ) -> None:
    monkeypatch.setenv("codebrain_results", str(tmp_path))
    groups = parse_groups("rec_fc,grading")
    models = run.resolve_models(groups, "Dataset976_X", _plans(), CONFIG, 0, seeds=3)
    root = tmp_path / "Dataset976_X"

    def folder(name: str) -> Path:
        return root / f"{name}__codebrainPlans__{CONFIG}" / "fold_0"

    assert models[PLAIN].folder == folder("CodeBrain")  # seed 0 is the ordinary run, reused as it is
    assert models[run.seeded(PLAIN, 1)].folder == folder("CodeBrain-seed1")
    assert models[run.seeded(Variant(ablation="no_fc"), 2)].folder == folder("CodeBrain-no_fc-seed2")
    # a shared stage is the plain method's run of the same seed
    assert models[run.seeded(Variant(ablation="cls"), 1)].stage_dirs == {
        1: folder("CodeBrain-seed1") / "stage1", 2: folder("CodeBrain-cls-seed1") / "stage2"}
    unique = list({m.folder: m for m in models.values()}.values())
    assert [m.variant.seed_index for m in unique] == [0, 0, 0, 1, 1, 1, 2, 2, 2]  # every seed 0 first
    assert run.resolve_models(groups, "Dataset976_X", _plans(), CONFIG, 0, seeds=1) == \
        run.resolve_models(groups, "Dataset976_X", _plans(), CONFIG, 0)  # one seed: today's models
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="seeds must be an integer >= 1"):
            run.resolve_models(groups, "Dataset976_X", _plans(), CONFIG, 0, seeds=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seeds must be an integer >= 1"):
        run.run_ablations(999, seeds=0)  # before any data is looked for

    calls: list[dict] = []
    monkeypatch.setattr(run, "run_training", lambda *args, **kwargs: calls.append(kwargs))
    trained = run.train_models("Dataset976_X", 0, CONFIG, unique[:2] + unique[3:5], iterations=4, seed=7)
    assert [(c["ablation"], c["seed_index"], c["seed"], c["stage"]) for c in calls] == [
        ("none", 0, 7, 1), ("none", 0, 7, 2), ("no_fc", 0, 7, 1),
        ("none", 1, 7, 1), ("none", 1, 7, 2), ("no_fc", 1, 7, 1)]  # run_training adds the index to the seed
    assert {c["prior_init"] for c in calls} == {"random"}  # like for like: no_fc has no E_c to start from
    assert list(trained) == [m.name for m in unique[:2] + unique[3:5]]


def test_fc_control_group_trains_the_controls_and_probes_the_plain_model(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("codebrain_results", str(tmp_path))
    groups = parse_groups("fc_control")
    models = run.resolve_models(groups, "Dataset976_X", _plans(), CONFIG, 0, seeds=2)
    assert sorted({m.name.split("__")[0] for m in models.values()}) == [
        "CodeBrain", "CodeBrain-fc_balanced", "CodeBrain-fc_balanced-seed1", "CodeBrain-fc_blank",
        "CodeBrain-fc_blank-seed1", "CodeBrain-no_fc", "CodeBrain-no_fc-seed1", "CodeBrain-seed1"]
    assert all(m.stages == (1,) for m in models.values())  # reconstruction only: no Stage II
    scorings = evaluations(groups)
    assert (PLAIN, "rec", "masked", "final") in scorings and (PLAIN, "rec", "zeros", "final") in scorings
    # the best checkpoints of the three trained-for-the-claim arms, scored into their own folders
    assert {v.ablation for v, _, _, checkpoint in scorings if checkpoint == "best"} == {"none", "no_fc", "fc_blank"}
    assert len(scorings) == 8
    best = run._evaluation_dir(models[PLAIN], "rec", "val", "masked", "best")
    assert best == models[PLAIN].folder / "reconstruction_eval" / "val-best"
    diagnostic = run._evaluation_dir(models[run.seeded(PLAIN, 1)], "rec", "val", "zeros")
    assert diagnostic == models[run.seeded(PLAIN, 1)].folder / "reconstruction_eval" / "val-fc_zeros"
    assert run._evaluation_dir(models[PLAIN], "rec", "val") == models[PLAIN].folder / "reconstruction_eval" / "val"
