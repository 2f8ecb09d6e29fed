"""evaluation/ablation/groups.py: the ablation groups' rows, options, stages and their parsing."""
from __future__ import annotations

import pytest

from codebrain_seg.cli.ablate import main as ablate_main
from evaluation.ablation.groups import (
    GROUPS,
    PLAIN,
    Variant,
    evaluations,
    needed_stages,
    parse_groups,
)


def test_groups_map_to_the_papers_rows_and_training_options() -> None:
    assert list(GROUPS) == ["rec_fc", "grading", "loss", "quantiser", "condition", "weights", "variant", "dim",
                            "fc_control", "copedit_prompts"]
    options = {name: [(row.label, row.variant.as_options()) for row in group.rows]
               for name, group in GROUPS.items() if group.method == "codebrain"}
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
    # d = 7 is the v1 paper's own code dimension: the plain v1 run (code_dim None, no folder tag).
    assert options["dim"] == [(f"d = {d}", {**none, "variant": "v1", "code_dim": None if d == 7 else d})
                              for d in (4, 5, 6, 7)]
    # which stages each table scores, and its Markdown layout
    assert {n: (g.stages, g.layout) for n, g in GROUPS.items()} == {
        "rec_fc": (("rec",), "metrics"), "grading": (("imp",), "metrics"), "loss": (("rec",), "metrics"),
        "quantiser": (("rec",), "metrics"), "condition": (("rec", "imp"), "psnr"), "weights": (("rec",), "psnr"),
        "variant": (("rec", "imp"), "metrics"), "dim": (("rec", "imp"), "psnr"), "fc_control": (("rec",), "metrics"),
        "copedit_prompts": (("imp",), "metrics")}
    # the published IXI figures the tables show beside ours
    assert GROUPS["rec_fc"].row("w/ F_c").paper == {"rec": (34.32, 95.94, 10.65)}
    assert GROUPS["grading"].row("w/ Cls.").paper == {"imp": (29.24, 92.83, 18.00)}
    assert GROUPS["weights"].row("lambda_a = 3").paper == {"rec": (34.26, None, None)}


def test_needed_stages_and_evaluations_share_the_plain_method() -> None:
    groups = parse_groups("rec_fc,grading")
    assert needed_stages(groups) == {PLAIN: (1, 2), Variant(ablation="no_fc"): (1,), Variant(ablation="cls"): (1, 2)}
    assert evaluations(groups) == [(Variant(ablation="no_fc"), "rec", "masked", "final"),
                                   (PLAIN, "rec", "masked", "final"), (Variant(ablation="cls"), "imp", "masked", "final"),
                                   (PLAIN, "imp", "masked", "final")]
    # reconstruction-only groups never ask for Stage II
    assert set(needed_stages(parse_groups(["loss", "weights"])).values()) == {(1,)}
    assert [g.name for g in parse_groups(None)] == list(GROUPS) == [g.name for g in parse_groups("all")]
    assert [g.name for g in parse_groups(" grading, rec_fc,grading ")] == ["grading", "rec_fc"]


def test_unknown_or_empty_group_is_a_clear_error(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(ValueError, match=r"unknown ablation group\(s\) 'fc', 'grade'; known groups: rec_fc, "
                                         r"grading, loss, quantiser, condition, weights, variant, dim, fc_control, "
                                         r"copedit_prompts \(or all\)"):
        parse_groups("rec_fc,fc,grade")
    with pytest.raises(ValueError, match="no ablation group selected"):
        parse_groups(" , ")
    # the command fails before touching any data (no dataset 999 exists)
    assert ablate_main(["-d", "999", "-f", "0", "--which", "rec_fc,bogus"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: unknown ablation group(s) 'bogus'; known groups: rec_fc, grading")
    assert error.count("\n") == 1
