"""codebrain_seg/results_layout.py: every results-folder name, and which configurations have a finished stage."""
from __future__ import annotations

from pathlib import Path

from codebrain_seg import results_layout as layout
from codebrain_seg.variants import CodeBrainVariant


def test_model_folder_names_of_methods_and_variants() -> None:
    assert layout.model_folder_name("2d") == "CodeBrain__codebrainPlans__2d"
    assert layout.model_folder_name("2d_cpu", "otherPlans", "Regression") == "Regression__otherPlans__2d_cpu"
    assert layout.METHOD_FOLDERS == {"codebrain": "CodeBrain", "regression": "Regression", "copedit": "CoPeDiT"}
    tagged = layout.CODEBRAIN_FOLDER + CodeBrainVariant(variant="v1", code_dim=5, ablation="no_fc").tag()
    assert layout.model_folder_name("2d", trainer=tagged) == "CodeBrain-v1-d5-no_fc__codebrainPlans__2d"
    assert layout.copedit_folder_name() == "CoPeDiT"
    assert layout.copedit_folder_name("mask") == "CoPeDiT-mask"
    assert layout.copedit_folder_name("mask", "per_count") == "CoPeDiT-mask-per_count"
    assert layout.copedit_folder_name(layout="per_count") == "CoPeDiT-per_count"


def test_source_rule_tags_and_segmentation_tags() -> None:
    assert layout.source_rule_tag("random") == "" and layout.source_rule_tag("relevant") == "-source_relevant"
    assert layout.segmentation_model_tag("2d") == "2d"
    assert layout.segmentation_model_tag("2d", "CodeBrain-v1") == "2d__CodeBrain-v1"
    assert layout.segmentation_model_tag("2d", "CodeBrain-v1", "relevant") == "2d__CodeBrain-v1-source_relevant"


def test_folders_under_the_results_root(project_dirs: dict[str, Path]) -> None:
    (project_dirs["raw"] / "Dataset977_Tiny").mkdir()
    results = project_dirs["results"]
    fold = results / "Dataset977_Tiny" / "CodeBrain__codebrainPlans__2d" / "fold_0"
    assert layout.fold_folder("Dataset977_Tiny", "CodeBrain", "codebrainPlans", "2d", 0) == fold
    assert layout.model_fold_dir(977, 0, "2d") == fold
    assert layout.model_fold_dir("Tiny", "all", "2d", "CoPeDiT") == fold.parent.parent / \
        "CoPeDiT__codebrainPlans__2d" / "fold_all"
    assert layout.stage_dir(fold, 2) == fold / "stage2"
    assert layout.imputation_eval_folder(977, 0, "2d", "val") == fold / "imputation_eval" / "val"
    assert layout.imputation_eval_folder(977, 0, "2d", "/data/my_cases", source_rule="relevant") == \
        fold / "imputation_eval" / "my_cases-source_relevant"
    assert layout.ablation_folder(977, 1, "2d_cpu") == \
        results / "Dataset977_Tiny" / "ablations__codebrainPlans__2d_cpu" / "fold_1"
    assert layout.segmentation_root("Dataset977_Tiny", 0) == results / "Dataset977_Tiny" / "segmentation" / "fold_0"


def test_finished_configurations_need_the_final_checkpoint(project_dirs: dict[str, Path]) -> None:
    (project_dirs["raw"] / "Dataset977_Tiny").mkdir()
    assert layout.finished_configurations(977, 0, "CodeBrain") == []  # no results folder yet
    dataset = project_dirs["results"] / "Dataset977_Tiny"

    def checkpoint(folder: str, fold: int, stage: int, name: str = "checkpoint_final.pth") -> None:
        path = dataset / folder / f"fold_{fold}" / f"stage{stage}" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"fake")

    checkpoint("CodeBrain__codebrainPlans__2d_cpu", 0, 2)
    checkpoint("CodeBrain__codebrainPlans__2d", 0, 2)
    checkpoint("CodeBrain__codebrainPlans__2d_tiny", 0, 1)  # Stage II not trained
    checkpoint("CodeBrain__codebrainPlans__2d_big", 0, 2, "checkpoint_latest.pth")  # Stage II unfinished
    checkpoint("CodeBrain__codebrainPlans__2d_other_fold", 1, 2)
    checkpoint("CodeBrain-v1__codebrainPlans__2d_v1", 0, 2)  # a variant is another folder prefix
    assert layout.finished_configurations(977, 0, "CodeBrain") == ["2d", "2d_cpu"]
    assert layout.finished_configurations(977, 0, "CodeBrain", stage=1) == ["2d_tiny"]
    assert layout.finished_configurations(977, 1, "CodeBrain") == ["2d_other_fold"]
    assert layout.finished_configurations("Dataset977_Tiny", 0, "CodeBrain-v1") == ["2d_v1"]
    assert layout.stage_finished(dataset / "CodeBrain__codebrainPlans__2d" / "fold_0" / "stage2")
    assert not layout.stage_finished(dataset / "CodeBrain__codebrainPlans__2d_big" / "fold_0" / "stage2")
