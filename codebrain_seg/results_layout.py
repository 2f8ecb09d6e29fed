"""Where trained models and their evaluations live: every results-folder name is built here.

nnU-Net's convention, ``Trainer__Plans__configuration/fold_F``::

    $codebrain_results/DatasetXXX_Name/
        <Method>[<variant tags>]__codebrainPlans__<configuration>/
            plans.json, dataset.json                   the plans and dataset the model was trained with
            fold_F/stage1/checkpoint_{latest,best,final}.pth, fold_F/stage2/...
            fold_F/imputation_eval/<cases>[-source_<rule>]/
        ablations__codebrainPlans__<configuration>/fold_F/
        segmentation/fold_F/                          nnU-Net's private tree and the segmentation evaluation

``<Method>`` is the method's folder name (:data:`METHOD_FOLDERS`); the variant tags
(``codebrain_seg.variants.variant_name``) follow it, so variants never share a folder.
"""
from __future__ import annotations

from pathlib import Path

from codebrain_seg import paths
from codebrain_seg.plans import PLANS_NAME
from codebrain_seg.variants import copedit_ablation, variant_name

METHOD_FOLDERS: dict[str, str] = {"codebrain": "CodeBrain", "regression": "Regression", "copedit": "CoPeDiT"}
CODEBRAIN_FOLDER = METHOD_FOLDERS["codebrain"]
COPEDIT_FOLDER = METHOD_FOLDERS["copedit"]
STAGE_FINAL = "checkpoint_final.pth"


def model_folder_name(configuration: str, plans_name: str = PLANS_NAME, trainer: str = CODEBRAIN_FOLDER) -> str:
    """``<trainer>__<plans>__<configuration>`` (nnU-Net's ``Trainer__Plans__configuration``)."""
    return f"{trainer}__{plans_name}__{configuration}"


def fold_folder(dataset_folder: str, trainer: str, plans_name: str, configuration: str, fold: int | str) -> Path:
    """``$codebrain_results/<DatasetXXX_Name>/<trainer>__<plans>__<configuration>/fold_<fold>``."""
    folder = model_folder_name(configuration, plans_name, trainer)
    return paths.results_root() / dataset_folder / folder / f"fold_{fold}"


def model_fold_dir(dataset: str | int, fold: int | str, configuration: str, trainer: str = CODEBRAIN_FOLDER) -> Path:
    """``fold_F`` of a model folder of a dataset given by id or name (``trainer`` = folder prefix with tags)."""
    return paths.results_dataset_dir(dataset) / model_folder_name(configuration, trainer=trainer) / f"fold_{fold}"


def stage_dir(fold_dir: Path, stage: int) -> Path:
    """``fold_F/stage<k>``."""
    return Path(fold_dir) / f"stage{stage}"


def stage_finished(stage_folder: Path) -> bool:
    """Whether a stage folder holds its final checkpoint."""
    return (Path(stage_folder) / STAGE_FINAL).is_file()


def finished_configurations(dataset: str | int, fold: int | str, trainer: str, stage: int = 2) -> list[str]:
    """Configurations with a finished ``stage`` for this dataset, fold and folder prefix ``trainer`` (sorted)."""
    root = paths.results_dataset_dir(dataset)
    if not root.is_dir():
        return []
    return sorted(folder.name.split("__")[-1] for folder in root.glob(f"{trainer}__*")
                  if folder.is_dir() and stage_finished(stage_dir(folder / f"fold_{fold}", stage)))


def copedit_folder_name(prompts: str = "learned", layout: str = "shared", seed_index: int = 0) -> str:
    """``CoPeDiT`` plus the option tag ``codebrain_train`` gives ``--prompts`` / ``--layout`` and the ``-seedK``
    tag of a seeded experiment's extra seed (``seed_index`` K > 0; ``CoPeDiT-mask-seed2``)."""
    return COPEDIT_FOLDER + variant_name(copedit_ablation(prompts, layout), seed_index=seed_index)


def cases_tag(cases: str) -> str:
    """Folder name of an evaluation's cases: ``val``, ``test`` or the name of a folder of cases."""
    return cases if cases in ("val", "test") else Path(cases).name


def source_rule_tag(source_rule: str) -> str:
    """Suffix of an evaluation folder for a v1 model's F_c source rule (nothing for the default ``random``)."""
    return "" if source_rule == "random" else f"-source_{source_rule}"


def imputation_eval_folder(dataset: str | int, fold: int | str, configuration: str, cases: str,
                           trainer: str = CODEBRAIN_FOLDER, source_rule: str = "random") -> Path:
    """``fold_F/imputation_eval/<cases>[-source_<rule>]`` of a CodeBrain model; ``cases`` = val, test or a folder."""
    tag = cases_tag(cases) + source_rule_tag(source_rule)
    return model_fold_dir(dataset, fold, configuration, trainer) / "imputation_eval" / tag


def segmentation_model_tag(configuration: str, trainer: str = CODEBRAIN_FOLDER, source_rule: str = "random") -> str:
    """Folder of a CodeBrain model's rows in the segmentation evaluation: ``<configuration>[__<trainer>]``
    (the plain CodeBrain adds nothing) plus the source-rule suffix."""
    tag = configuration if trainer == CODEBRAIN_FOLDER else f"{configuration}__{trainer}"
    return tag + source_rule_tag(source_rule)


def ablation_folder(dataset: str | int, fold: int | str, configuration: str, plans_name: str = PLANS_NAME) -> Path:
    """``ablations__<plans>__<configuration>/fold_F`` of the ablation runner."""
    return paths.results_dataset_dir(dataset) / f"ablations__{plans_name}__{configuration}" / f"fold_{fold}"


def segmentation_root(dataset_folder: str, fold: int | str) -> Path:
    """``$codebrain_results/<DatasetXXX_Name>/segmentation/fold_F`` (nnU-Net's private tree lives inside)."""
    return paths.results_root() / dataset_folder / "segmentation" / f"fold_{fold}"
