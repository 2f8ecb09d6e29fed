"""``codebrain_ablate`` (issue 7): the groups' options and folders, the table writer, and the command end to end.

The table tests feed summaries computed by the real aggregation from real per-slice metrics of synthetic
predictions (less noise = a better setting), so the orderings and the claims' verdicts are known. The end-to-end
test trains ``rec_fc,grading`` for two iterations per stage on the tiny demo project, checks every file and that a
rerun retrains and re-evaluates nothing. One torch thread throughout.
"""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import TINY_DEMO_CONFIGURATION, use_project_folders

from codebrain_seg.cli.ablate import main as ablate_main
from codebrain_seg.io import read_json
from evaluation.ablation import run

DATASET_ID = 976  # the tiny project of tests/test_ablations.py (same arguments: built once per session)
TINY_NETWORK = {"posterior_width": 8, "common_width": 8, "decoder_width": 8, "depth": 1}
TINY_CODEBOOK = 32
CONFIG = TINY_DEMO_CONFIGURATION
CHANNELS = ["T1", "T1Gd", "T2", "FLAIR"]


# ---- groups ------------------------------------------------------------------------------------------------


# ---- tables from computed summaries ------------------------------------------------------------------------


# ---- end to end on the tiny demo project -----------------------------------------------------------------


@pytest.fixture
def project(tiny_demo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_thread) -> SimpleNamespace:
    """The tiny demo project with a fresh results folder (one torch thread)."""
    demo = tiny_demo(DATASET_ID, TINY_NETWORK, vq_codebook_size=TINY_CODEBOOK)
    use_project_folders(demo.root, monkeypatch)
    monkeypatch.setenv("codebrain_results", str(tmp_path / "results"))
    results = tmp_path / "results" / demo.preprocessed.name
    return SimpleNamespace(demo=demo, results=results)


def test_command_trains_evaluates_tabulates_and_reuses(project: SimpleNamespace,
                                                       capsys: pytest.CaptureFixture) -> None:
    argv = ["-d", str(DATASET_ID), "-f", "0", "-c", CONFIG, "--which", "rec_fc,grading", "--iterations", "2",
            "--device", "cpu", "--num-threads", "1", "--evaluation-slices", "4"]
    assert ablate_main(argv) == 0
    out = project.results / f"ablations__codebrainPlans__{CONFIG}" / "fold_0" / "val"
    assert capsys.readouterr().out.strip() == f"ablation tables: {out / 'ablations.md'}"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["ablations.json", "ablations.md"] + [f"{g}.{e}" for g in ("rec_fc", "grading") for e in ("md", "csv", "json")])

    def model(name: str) -> Path:
        return project.results / f"{name}__codebrainPlans__{CONFIG}" / "fold_0"

    # only what the tables need: no Stage II for no_fc, no Stage I of its own for cls
    assert sorted(p.name for p in model("CodeBrain").iterdir() if p.name.startswith("stage")) == ["stage1", "stage2"]
    assert not (model("CodeBrain-no_fc") / "stage2").exists() and not (model("CodeBrain-cls") / "stage1").exists()
    checkpoints = sorted(project.results.glob("*/fold_0/stage*/checkpoint_*.pth"))
    assert len(checkpoints) == 4 * 3  # plain I + II, no_fc I, cls II; best, final, latest each

    combined = read_json(out / "ablations.json")
    assert combined["trained_now"] == {f"CodeBrain__codebrainPlans__{CONFIG}": [1, 2],
                                       f"CodeBrain-no_fc__codebrainPlans__{CONFIG}": [1],
                                       f"CodeBrain-cls__codebrainPlans__{CONFIG}": [2]}
    tables = {t["group"]: t for t in combined["groups"]}
    # every cell is the normal evaluation's figure of that model
    for group, stage, setting, name, folder in (
            ("rec_fc", "rec", "w/ F_c", "CodeBrain", "reconstruction_eval"),
            ("rec_fc", "rec", "w/o F_c", "CodeBrain-no_fc", "reconstruction_eval"),
            ("grading", "imp", "w/ Grad.", "CodeBrain", "imputation_eval"),
            ("grading", "imp", "w/ Cls.", "CodeBrain-cls", "imputation_eval")):
        evaluation = read_json(model(name) / folder / "val" / "summary.json")
        assert evaluation["evaluation_slices"] == 4 and len(evaluation["patterns"]) == 14
        method = "oracle" if stage == "rec" else "codebrain"
        overall = evaluation["summary"]["paper"]["image"][method]["overall"]
        row = next(r for r in tables[group]["rows"] if r["setting"] == setting)
        assert row["stage"] == stage and row["model"] == f"{name}__codebrainPlans__{CONFIG}"
        assert {m: row[m]["mean"] for m in ("psnr", "ssim", "mae")} == overall
        assert row["iterations"]["stage1"] == 2 and row["num_pairs"] == 28 and row["cases"] == 1
        assert 0 < row["psnr"]["mean"] < 100 and 0 <= row["mae"]["mean"] <= 1000
        if stage == "rec":  # the given sequences are scored too, beside the missing ones (28 pairs each)
            given = evaluation["summary"]["paper"]["image"]["oracle_given"]["overall"]
            assert evaluation["summary"]["paper"]["image"]["oracle_given"]["num_pairs"] == 28
            assert row["given_psnr"] == {"mean": given["psnr"], "sd": None}
        else:
            assert row["given_psnr"] is None
    assert next(r for r in tables["grading"]["rows"] if r["setting"] == "w/ Cls.")["iterations"] == {
        "stage1": 2, "stage2": 2}
    for table in tables.values():  # each verdict is the comparison of the overall PSNRs of the table's rows
        psnr = {(r["setting"], r["stage"]): r["psnr"]["mean"] for r in table["rows"]}
        for claim in table["claims"]:
            values = {label: psnr[(label, claim["stage"])] for label in (claim["better"], *claim["worse"])}
            margin = values[claim["better"]] - max(values[w] for w in claim["worse"])
            assert claim["psnr_mean"] == values and claim["margin_db"] == pytest.approx(margin)
            assert claim["held"] is (margin > 0)

    before = {p: p.stat().st_mtime_ns for p in checkpoints}
    evaluations_before = {p: p.stat().st_mtime_ns for p in project.results.glob("*/fold_0/*_eval/val/summary.json")}
    assert len(evaluations_before) == 4
    assert ablate_main(argv) == 0  # the rerun retrains and re-evaluates nothing
    assert {p: p.stat().st_mtime_ns for p in checkpoints} == before
    assert sorted(project.results.glob("*/fold_0/stage*/checkpoint_*.pth")) == checkpoints
    assert {p: p.stat().st_mtime_ns for p in evaluations_before} == evaluations_before
    rerun = read_json(out / "ablations.json")
    assert rerun["trained_now"] == {} and rerun["groups"] == json.loads(json.dumps(combined["groups"]))
    # each row names the precision its model was trained in; asking for the other one refuses to reuse the models
    trained_in = {r["training_precision"] for t in tables.values() for r in t["rows"]}
    assert len(trained_in) == 1 and trained_in <= {"fp32", "bf16"}
    other = "fp32" if trained_in == {"bf16"} else "bf16"
    capsys.readouterr()
    assert ablate_main(argv + ["--precision", other]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and error.count("\n") == 1
    assert f"is finished in {trained_in.pop()} but --precision {other} was asked for" in error
    assert {p: p.stat().st_mtime_ns for p in checkpoints} == before  # nothing retrained or overwritten


def test_variant_group_scores_v1_and_cvpr_on_both_stages(project: SimpleNamespace) -> None:
    out = run.run_ablations(DATASET_ID, 0, CONFIG, "variant", iterations=2, device="cpu", evaluation_slices=4,
                            num_threads=1)
    table = read_json(out / "variant.json")
    assert [(r["stage"], r["model"]) for r in table["rows"]] == [
        (stage, f"{name}__codebrainPlans__{CONFIG}") for stage in ("rec", "imp")
        for name in ("CodeBrain-v1", "CodeBrain")]
    for row in table["rows"]:
        folder = "reconstruction_eval" if row["stage"] == "rec" else "imputation_eval"
        evaluation = read_json(project.results / row["model"] / "fold_0" / folder / "val" / "summary.json")
        method = "oracle" if row["stage"] == "rec" else "codebrain"
        assert {m: row[m]["mean"] for m in ("psnr", "ssim", "mae")} == \
            evaluation["summary"]["paper"]["image"][method]["overall"]
        assert row["num_pairs"] == 28 and row["paper_ixi"] is not None
    v1 = read_json(project.results / f"CodeBrain-v1__codebrainPlans__{CONFIG}" / "fold_0" / "reconstruction_eval"
                   / "val" / "summary.json")
    assert v1["methods"]["oracle"]["model"]["network_config"]["variant"] == "v1"
    header = (out / "variant.md").read_text().splitlines()[4]
    assert header.startswith("| Stages | Settings | PSNR (dB) ↑")
