"""``codebrain_ablate`` (issue 7): the groups' options and folders, the table writer, and the command end to end.

The table tests feed summaries computed by the real aggregation from real per-slice metrics of synthetic
predictions (less noise = a better setting), so the orderings and the claims' verdicts are known. The end-to-end
test trains ``rec_fc,grading`` for two iterations per stage on the tiny demo project, checks every file and that a
rerun retrains and re-evaluates nothing. One torch thread throughout.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import TINY_DEMO_CONFIGURATION, use_project_folders

from codebrain_seg.cli.ablate import main as ablate_main
from codebrain_seg.io import read_json
from codebrain_seg.metrics import slice_metrics
from evaluation.ablation import report, run
from evaluation.ablation.groups import (
    GROUPS,
    PLAIN,
    Variant,
    evaluations,
    needed_stages,
    parse_groups,
)
from evaluation.imputation.aggregate import all_patterns, parse_pattern, summarise

DATASET_ID = 976  # the tiny project of tests/test_ablations.py (same arguments: built once per session)
TINY_NETWORK = {"posterior_width": 8, "common_width": 8, "decoder_width": 8, "depth": 1}
TINY_CODEBOOK = 32
CONFIG = TINY_DEMO_CONFIGURATION
CHANNELS = ["T1", "T1Gd", "T2", "FLAIR"]


# ---- groups ------------------------------------------------------------------------------------------------


def test_groups_map_to_the_papers_rows_and_training_options() -> None:
    assert list(GROUPS) == ["rec_fc", "grading", "loss", "quantiser", "condition", "weights", "variant", "dim"]
    options = {name: [(row.label, row.variant.as_options()) for row in group.rows]
               for name, group in GROUPS.items()}
    none = {"ablation": "none", "loss_weights": None, "variant": "cvpr", "code_dim": None}
    assert options["rec_fc"] == [("w/o F_c", {**none, "ablation": "no_fc"}), ("w/ F_c", none)]
    assert options["grading"] == [("w/ Cls.", {**none, "ablation": "cls"}), ("w/ Grad.", none)]
    assert options["loss"] == [("L_1", {**none, "ablation": "l1"}), ("L_psnr", none)]
    assert [kw["ablation"] for _, kw in options["quantiser"]] == ["vq", "none", "continuous"]
    assert [kw["ablation"] for _, kw in options["condition"]] == ["vq", "none", "continuous"]
    # CVPR Table 5: lambda_m in 10/20/30 at lambda_a = 5, lambda_a in 3/7 at lambda_m = 20
    assert [kw["loss_weights"] for _, kw in options["weights"]] == [(10.0, 5.0), (20.0, 5.0), (30.0, 5.0),
                                                                    (20.0, 3.0), (20.0, 7.0)]
    assert options["variant"] == [("v1 (per-modality codes)", {**none, "variant": "v1"}),
                                  ("CVPR (full-stack code)", none)]
    assert options["dim"] == [(f"d = {d}", {**none, "variant": "v1", "code_dim": d}) for d in (4, 5, 6, 7)]
    # which stages each table scores, and its Markdown layout
    assert {n: (g.stages, g.layout) for n, g in GROUPS.items()} == {
        "rec_fc": (("rec",), "metrics"), "grading": (("imp",), "metrics"), "loss": (("rec",), "metrics"),
        "quantiser": (("rec",), "metrics"), "condition": (("rec", "imp"), "psnr"), "weights": (("rec",), "psnr"),
        "variant": (("rec", "imp"), "metrics"), "dim": (("rec", "imp"), "psnr")}
    # the published IXI figures the tables show beside ours
    assert GROUPS["rec_fc"].row("w/ F_c").paper == {"rec": (34.32, 95.94, 10.65)}
    assert GROUPS["grading"].row("w/ Cls.").paper == {"imp": (29.24, 92.83, 18.00)}
    assert GROUPS["weights"].row("lambda_a = 3").paper == {"rec": (34.26, None, None)}


def test_needed_stages_and_evaluations_share_the_plain_method() -> None:
    groups = parse_groups("rec_fc,grading")
    assert needed_stages(groups) == {PLAIN: (1, 2), Variant(ablation="no_fc"): (1,), Variant(ablation="cls"): (1, 2)}
    assert evaluations(groups) == [(Variant(ablation="no_fc"), "rec"), (PLAIN, "rec"),
                                   (Variant(ablation="cls"), "imp"), (PLAIN, "imp")]
    # reconstruction-only groups never ask for Stage II
    assert set(needed_stages(parse_groups(["loss", "weights"])).values()) == {(1,)}
    assert [g.name for g in parse_groups(None)] == list(GROUPS) == [g.name for g in parse_groups("all")]
    assert [g.name for g in parse_groups(" grading, rec_fc,grading ")] == ["grading", "rec_fc"]


def test_unknown_or_empty_group_is_a_clear_error(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(ValueError, match=r"unknown ablation group\(s\) 'fc', 'grade'; known groups: rec_fc, "
                                         r"grading, loss, quantiser, condition, weights, variant, dim \(or all\)"):
        parse_groups("rec_fc,fc,grade")
    with pytest.raises(ValueError, match="no ablation group selected"):
        parse_groups(" , ")
    # the command fails before touching any data (no dataset 999 exists)
    assert ablate_main(["-d", "999", "-f", "0", "--which", "rec_fc,bogus"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: unknown ablation group(s) 'bogus'; known groups: rec_fc, grading")
    assert error.count("\n") == 1


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


# ---- tables from computed summaries ------------------------------------------------------------------------


def _summary(noise: float, seed: int) -> dict:
    """The aggregate's summary of synthetic predictions: ground truth plus Gaussian noise of std ``noise``."""
    generator = np.random.default_rng(seed)
    target = generator.uniform(0.2, 0.8, size=(2, 24, 24))
    rows = []
    for pattern in all_patterns(len(CHANNELS)):
        for channel, given in enumerate(parse_pattern(pattern)):
            if given:
                continue
            prediction = np.clip(target + generator.normal(0.0, noise, target.shape), 0, 1)
            scores = slice_metrics(prediction, target)
            rows += [{"method": "m", "protocol": "paper", "region": "image", "case": "c", "pattern": pattern,
                      "missing": CHANNELS[channel], "slice": s, **{k: float(v[s]) for k, v in scores.items()}}
                     for s in range(len(target))]
    return summarise(rows)["paper"]["image"]["m"]


def _results(group_name: str, noise: dict[str, float]) -> dict:
    group = GROUPS[group_name]
    return {(row.label, stage): {"summary": _summary(noise[row.label] * (2 if stage == "imp" else 1), index),
                                 "model": f"Model{index}", "iterations": {"stage1": 5, "stage2": 7}, "cases": 1}
            for index, row in enumerate(group.rows) for stage in group.stages}


def test_metrics_table_in_markdown_csv_and_json(tmp_path: Path) -> None:
    results = _results("rec_fc", {"w/o F_c": 0.1, "w/ F_c": 0.02})
    table = report.group_table(GROUPS["rec_fc"], results)
    written = report.write_report(tmp_path, [table], {"dataset": "D", "fold": 0, "configuration": CONFIG,
                                                      "cases": "val"})
    assert sorted(written) == ["ablations.json", "ablations.md", "rec_fc.csv", "rec_fc.json", "rec_fc.md"]
    summary = results[("w/ F_c", "rec")]["summary"]
    # JSON: the summary's overall / O->O / M->O values, unchanged
    saved = read_json(tmp_path / "rec_fc.json")
    assert [(r["stage"], r["setting"]) for r in saved["rows"]] == [("rec", "w/o F_c"), ("rec", "w/ F_c")]
    assert saved["rows"][1]["psnr"] == {"mean": summary["overall"]["psnr"], "O->O": summary["O->O"]["psnr"],
                                        "M->O": summary["M->O"]["psnr"]}
    assert saved["rows"][1]["mae"]["mean"] == summary["overall"]["mae"] and saved["rows"][1]["num_pairs"] == 28
    assert saved["rows"][1]["paper_ixi"] == {"psnr": 34.32, "ssim": 95.94, "mae": 10.65}
    assert saved["claims"] == [{"text": "with F_c > without in reconstruction", "stage": "rec",
                                "better": "w/ F_c", "worse": ["w/o F_c"], "held": True,
                                "psnr_mean": {"w/ F_c": summary["overall"]["psnr"],
                                              "w/o F_c": results[("w/o F_c", "rec")]["summary"]["overall"]["psnr"]},
                                "margin_db": pytest.approx(summary["overall"]["psnr"] - results[
                                    ("w/o F_c", "rec")]["summary"]["overall"]["psnr"]), "tie": False}]
    assert saved["claims"][0]["margin_db"] > report.TIE_DB
    assert saved["dataset"] == "D" and read_json(tmp_path / "ablations.json")["groups"][0]["group"] == "rec_fc"
    # CSV: one row per (stage, setting), every scope of every metric
    with open(tmp_path / "rec_fc.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 and rows[1]["setting"] == "w/ F_c" and rows[1]["model"] == "Model1"
    assert list(rows[0])[:8] == ["group", "stage", "setting", "model", "stage1_iterations", "stage2_iterations",
                                 "cases", "num_pairs"]
    assert float(rows[1]["psnr_o2o"]) == pytest.approx(summary["O->O"]["psnr"], rel=1e-12)
    assert float(rows[1]["ssim_m2o"]) == pytest.approx(summary["M->O"]["ssim"], rel=1e-12)
    # Markdown: the paper's Table 3 shape, then the details, the claim and the note
    lines = (tmp_path / "rec_fc.md").read_text().splitlines()
    main = [line for line in lines if line.startswith("| Rec. |")]
    assert lines[4] == ("| Stages | Settings | PSNR (dB) ↑ | SSIM (%) ↑ | MAE (×1000) ↓ | "
                        "paper, IXI (PSNR / SSIM / MAE) |")
    assert main[1] == (f"| Rec. | w/ F_c | {summary['overall']['psnr']:.2f} | {summary['overall']['ssim']:.2f} | "
                       f"{summary['overall']['mae']:.2f} | 34.32 / 95.94 / 10.65 |")
    assert len(main) == 4 and all(line.count("|") == 15 for line in main[2:])  # 2 main rows + 2 detail rows
    assert any("with F_c > without in reconstruction (Rec.): **held**" in line for line in lines)
    assert "## Effect of the common features F_c" in (tmp_path / "ablations.md").read_text()


def test_claim_that_fails_is_reported_as_not_held(tmp_path: Path) -> None:
    table = report.group_table(GROUPS["grading"], _results("grading", {"w/ Cls.": 0.02, "w/ Grad.": 0.1}))
    assert [c["held"] for c in table["claims"]] == [False]
    assert "grading >= classification (Imp.): **did not hold**" in report.markdown(table)
    assert table["claims"][0]["margin_db"] < -report.TIE_DB and "a tie" not in report.markdown(table)
    # a verdict decided by hundredths of a dB says so
    results = _results("grading", {"w/ Cls.": 0.1, "w/ Grad.": 0.1})
    grading = results[("w/ Grad.", "imp")]["summary"]
    grading["overall"] = {**grading["overall"],
                          "psnr": results[("w/ Cls.", "imp")]["summary"]["overall"]["psnr"] - 0.02}
    close = report.group_table(GROUPS["grading"], results)
    assert close["claims"][0]["held"] is False and close["claims"][0]["tie"] is True
    assert "under 0.1 dB: a tie at this precision" in report.markdown(close)
    with pytest.raises(ValueError, match=r"group 'grading': no evaluation for w/ Grad. \(imp\)"):
        report.group_table(GROUPS["grading"], {("w/ Cls.", "imp"): _results("grading", {"w/ Cls.": .1,
                                                                                          "w/ Grad.": .1})[
            ("w/ Cls.", "imp")]})


def test_psnr_layout_and_the_plot_against_d(tmp_path: Path) -> None:
    noise = {f"d = {d}": 0.2 / d for d in (4, 5, 6, 7)}  # a larger d reconstructs better
    table = report.group_table(GROUPS["dim"], _results("dim", noise))
    written = report.write_report(tmp_path, [table], {})
    assert (tmp_path / "dim_psnr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "dim_psnr.png" in written
    assert [(r["stage"], r["d"]) for r in table["rows"]] == [("rec", d) for d in (4, 5, 6, 7)] + \
        [("imp", d) for d in (4, 5, 6, 7)]
    rec = [r["psnr"]["mean"] for r in table["rows"] if r["stage"] == "rec"]
    assert rec == sorted(rec) and table["claims"][0]["held"] is True
    lines = (tmp_path / "dim.md").read_text().splitlines()
    assert lines[4] == "| Settings | d | Rec. PSNR (dB) ↑ | Imp. PSNR (dB) ↑ |"
    body = [line for line in lines[6:] if line.startswith("| d = ")]
    details = [line for line in lines if line.startswith(("| Rec. | d = ", "| Imp. | d = "))]
    assert len(body) == 4 and len(details) == 8  # one line per d; a detail row per (stage, d)
    first = table["rows"][0]["psnr"]["mean"], table["rows"][4]["psnr"]["mean"]
    assert body[0] == f"| d = 4 | 4 | {first[0]:.2f} | {first[1]:.2f} |"
    with open(tmp_path / "dim.csv", newline="") as handle:
        assert [row["d"] for row in csv.DictReader(handle)] == ["4", "5", "6", "7"] * 2
    weights = report.group_table(GROUPS["weights"], _results("weights", {r.label: 0.05 for r in
                                                                          GROUPS["weights"].rows}))
    header = report.markdown(weights).splitlines()[4]
    assert header == "| Settings | lambda_m | lambda_a | Rec. PSNR (dB) ↑ | paper, IXI: Rec. PSNR |"


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
    assert next(r for r in tables["grading"]["rows"] if r["setting"] == "w/ Cls.")["iterations"] == {
        "stage1": 2, "stage2": 2}
    assert all(c["held"] in (True, False) for t in tables.values() for c in t["claims"])

    before = {p: p.stat().st_mtime_ns for p in checkpoints}
    evaluations_before = {p: p.stat().st_mtime_ns for p in project.results.glob("*/fold_0/*_eval/val/summary.json")}
    assert len(evaluations_before) == 4
    assert ablate_main(argv) == 0  # the rerun retrains and re-evaluates nothing
    assert {p: p.stat().st_mtime_ns for p in checkpoints} == before
    assert sorted(project.results.glob("*/fold_0/stage*/checkpoint_*.pth")) == checkpoints
    assert {p: p.stat().st_mtime_ns for p in evaluations_before} == evaluations_before
    rerun = read_json(out / "ablations.json")
    assert rerun["trained_now"] == {} and rerun["groups"] == json.loads(json.dumps(combined["groups"]))


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
