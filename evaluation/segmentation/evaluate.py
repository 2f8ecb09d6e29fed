"""Downstream segmentation evaluation: a 3D nnU-Net segments each case with all real sequences (full), with the
missing ones all-zero (zero-fill) and with them imputed by each registered method; WT/TC/ET Dice and HD95.

For every evaluation case (the fold's labelled validation cases, or a folder of cases) and every scenario (a
missing pattern: by default the four "3 -> 1" ones, optionally all ``2^C - 2``), the segmenter gets

* ``full``: the real sequences (one segmentation per case, shared by all scenarios);
* ``zero-fill``: the missing sequences all zero in the original intensities — the registry's ``zero`` method.
  nnU-Net normalises each channel by z-score inside the non-zero mask of *all* channels (BraTS plans:
  ``ZScoreNormalization``, ``use_mask_for_norm``): an all-zero channel has mean 0 and standard deviation 0 there,
  so it becomes exactly 0 everywhere after normalisation — the value that stands for the brain's mean intensity
  of that sequence in a real case, i.e. a flat, contrast-free "average brain" channel, while the mask itself is
  unchanged as long as the other sequences cover the brain;
* ``<method>``: the missing sequences filled by each method of :mod:`codebrain_seg.run.methods`.

Everything is cached as files written atomically, keyed by (method, scenario, case), so a rerun reuses them and
an interrupted run resumes where it stopped::

    $codebrain_results/DatasetXXX_Name/segmentation/fold_F/
        imputed/<cases>/<configuration>/<method>/<pattern>/CASE_XXXX.nii.gz    imputed sequences only
        <segmenter>/<cases>/<configuration>/
            segmenter.json                         model folder, checkpoints and prediction settings used
            segmentations/full/CASE.nii.gz         (+ CASE.scores.json, the scores of that file)
            segmentations/<method>/<pattern>/CASE.nii.gz
            per_case.csv, table.md, table.csv, table.json, dice_bars.png

``<segmenter>`` is the trained model's folder name (``nnUNetTrainerShort__nnUNetPlans_0.5GB__3d_fullres``) or
``external__<name>__<hash>`` for a user's model; ``<cases>`` is ``val`` or ``cases__<name>__<hash>``;
``<pattern>`` is the availability bits in channel order (``0111`` = first sequence missing). If the
segmenter's weights or the prediction settings change, its cached segmentations are deleted and recomputed; when
an imputation model changes (retrained: other checkpoint files), that method's imputed volumes and segmentations
are (``imputer.json`` in each method folder records the model they came from).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from codebrain_seg import paths
from codebrain_seg.device import avoid_amx_for_3d_training
from codebrain_seg.errors import InputError, UnknownNameError
from codebrain_seg.inference.model_folders import model_folder_prefix
from codebrain_seg.inference.request import ImputationContext
from codebrain_seg.raw_dataset import (
    FILE_ENDING,
    channel_names,
    load_dataset_json,
)
from codebrain_seg.results_layout import segmentation_model_tag
from codebrain_seg.run.methods import METHODS
from codebrain_seg.variants import CodeBrainVariant
from evaluation.segmentation import nnunet_bridge as bridge
from evaluation.segmentation import report
from evaluation.segmentation.cases import (  # noqa: F401 (part of this module's API)
    FULL,
    PAPER_ORDER,
    SCENARIO_SETS,
    ZERO_METHOD,
    EvaluationCase,
    Scenario,
    _labelled_cases,
    _short_hash,
    folder_cases,
    make_scenarios,
    validation_cases,
)
from evaluation.segmentation.label_mapping import truth_regions
from evaluation.segmentation.retrained import RetrainedSetup, evaluate_retrained, training_cases
from evaluation.segmentation.runner import (  # noqa: F401 (part of this module's API)
    CaseRunner,
    RunState,
    SegmentationEvaluation,
    build_imputers,
    drop_stale_method_caches,
    invalidate_if_changed,
    score_row,
)
from planners.plan_and_preprocess import load_plans, load_split

logger = logging.getLogger(__name__)

PROTOCOLS = ("fixed", "retrained", "both")



# The same default as codebrain_evaluate_imputation: every registered method would demand a trained model of each
# learned method (regression, CoPeDiT), which a user who trained CodeBrain alone does not have.
DEFAULT_METHODS = ("codebrain", "mean")


def resolve_methods(methods: Sequence[str] | None) -> list[str]:
    """Imputation methods to run, zero-fill first; default CodeBrain and the mean baseline. Unknown names raise."""
    requested = list(DEFAULT_METHODS) if methods is None else [m.strip() for m in methods if m.strip()]
    unknown = [m for m in requested if m not in METHODS]
    if unknown:
        raise UnknownNameError(f"unknown imputation method(s) {', '.join(unknown)}; registered methods: "
                               f"{', '.join(METHODS)}")
    return [ZERO_METHOD] + [m for m in dict.fromkeys(requested) if m != ZERO_METHOD]


def evaluate_segmentation(dataset: str | int, fold: int = 0, configuration: str = "2d_cpu",
                          segmenter: str | Path | None = None, train_segmenter: bool = False,
                          seg_trainer: str = bridge.DEFAULT_TRAINER, scenarios: str = "3to1",
                          methods: Sequence[str] | None = None, device: str = "cpu", cases: str | Path | None = None,
                          gpu_memory_gb: float | None = None, tile_step_size: float = 0.5,
                          use_mirroring: bool = True, num_processes: int = 2,
                          precision: str = "auto", ablation: str = "none",
                          loss_weights: Sequence[float] | str | None = None, variant: str = "cvpr",
                          code_dim: int | None = None, source_rule: str = "random",
                          seg_label_map: str | None = None, protocol: str = "fixed",
                          retrained_scenarios: Sequence[str] | None = None,
                          seg_recipe: str = "default") -> SegmentationEvaluation:
    """Segment the evaluation cases under every scenario and input, score them and write the tables and figure.

    Args:
        dataset: dataset id, full or short name.
        fold: fold of ``splits_final.json``: the segmenter trains on its training cases, its labelled validation
            cases are evaluated (unless ``cases`` is given).
        configuration: CodeBrain configuration of the learned imputation methods (``ImputationContext``).
        segmenter: an existing nnU-Net model folder (``Trainer__Plans__configuration``), used as it is.
        train_segmenter: train the fold's segmenter (nnU-Net 3d_fullres, ``seg_trainer``) if not trained yet.
        seg_trainer: nnU-Net trainer class name (``nnUNetTrainerShort`` for CPU demos).
        scenarios: ``3to1`` (one sequence missing) or ``all`` (every pattern).
        methods: imputation methods of the registry (default: codebrain, mean); zero-fill is always included.
        device: ``cpu`` or ``cuda``, for the segmenter and the imputation methods.
        cases: a folder of labelled cases in nnU-Net raw layout, evaluated instead of the validation cases.
        gpu_memory_gb: GPU memory target given to nnU-Net's planner (None: nnU-Net's default, 8 GB).
        tile_step_size: sliding-window step of nnU-Net's predictor, as a fraction of the patch (0.5 default).
        use_mirroring: test-time mirroring where the model allows it.
        num_processes: worker processes of nnU-Net's preprocessing.
        precision: the segmenter's precision on a CPU, ``auto`` (bf16 autocast where the CPU computes bf16
            natively), ``fp32`` or ``bf16`` (:func:`evaluation.segmentation.nnunet_bridge.resolve_precision`).
        ablation, loss_weights, variant, code_dim: the CodeBrain variant whose model imputes (``codebrain_train``'s
            options); a variant's imputations, segmentations and tables go to a folder of its own,
            ``<configuration>__CodeBrain-<tags>``.
        source_rule: v1 models: ``random`` (default) or ``relevant`` F_c source.
        seg_label_map: ``'WT=1,2,3;TC=2,3;ET=3'``: the label values of the segmenter's output regions, when its
            ``dataset.json`` does not say (default: derived from it, ``evaluation.segmentation.label_mapping``).
        protocol: ``fixed`` (CodeBrain's Table 4: one full-modality segmenter fed every input), ``retrained``
            (CoPeDiT's Table 9: per scenario, a Missing segmenter and one trained on each method's imputations,
            :mod:`evaluation.segmentation.retrained`) or ``both``.
        retrained_scenarios: the missing sequences the retrained protocol runs (e.g. ``["T1Gd"]``; default every
            "3 -> 1" scenario); each trains ``1 + methods`` segmenters.
        seg_recipe: ``default`` (nnU-Net's plans for ``gpu_memory_gb``) or ``cpu`` (the CPU recipe of
            :mod:`evaluation.segmentation.cpu_segmenter`: 2 mm plans, a narrow U-Net, a time-guarded schedule; use
            it with ``seg_trainer='nnUNetTrainerCPUDA5'``) for every segmenter this run trains.

    Returns:
        A SegmentationEvaluation naming the output folder, the table and the written files (``both``: the fixed
        protocol's, with the retrained one's in ``.retrained``).
    """
    if train_segmenter or protocol != "fixed":
        avoid_amx_for_3d_training()  # nnU-Net's 3D U-Net trains in this process: before any convolution
    if protocol not in PROTOCOLS:
        raise InputError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    if protocol != "fixed" and segmenter is not None:
        raise InputError("the retrained protocol trains its segmenters (Missing, one per method) with --seg-trainer "
                         "and compares them with the fold's full-modality segmenter trained the same way: use "
                         "--train-segmenter instead of --segmenter (or --protocol fixed)")
    if segmenter is not None and train_segmenter:
        raise InputError("give either --segmenter (an existing nnU-Net model) or --train-segmenter, not both")
    if device not in ("cpu", "cuda"):
        raise InputError(f"device must be cpu or cuda, got {device!r}")
    precision = bridge.resolve_precision(precision, device)
    raw_dir = paths.raw_dataset_dir(dataset)
    dataset_name = raw_dir.name
    dataset_json = load_dataset_json(raw_dir)
    names = channel_names(dataset_json)
    labelled = _labelled_cases(raw_dir)
    if not labelled:
        raise InputError(f"{raw_dir} has no label maps: segmentation evaluation needs labelsTr/CASE{FILE_ENDING} "
                         f"(the segmenter is trained and scored on labelled cases)")
    truth_regions(dataset_json, f"{raw_dir}/dataset.json")  # the dataset's own WT/TC/ET, or a clear refusal
    method_names = resolve_methods(methods)
    scenario_list = make_scenarios(names, scenarios)
    retrained_list = _retrained_scenarios(names, retrained_scenarios) if protocol != "fixed" else []
    preprocessed_dir = paths.preprocessed_root() / dataset_name
    plans = load_plans(preprocessed_dir)
    split = load_split(preprocessed_dir, fold)

    if cases is None:
        evaluation_cases, cases_tag = validation_cases(raw_dir, split), "val"
        if not evaluation_cases:
            raise InputError(f"fold {fold} of {dataset_name} has no labelled validation case to evaluate; pass "
                             f"--cases FOLDER")
    else:
        evaluation_cases = folder_cases(Path(cases), len(names))
        cases_tag = f"cases__{Path(cases).resolve().name}__{_short_hash(Path(cases))}"

    codebrain = CodeBrainVariant(ablation, loss_weights, variant, code_dim)  # type: ignore[arg-type]
    trainer = model_folder_prefix(codebrain, dataset_name, configuration)
    # The plain method keeps the plain folder name, so results of earlier runs stay where they are.
    model_tag = segmentation_model_tag(configuration, trainer, source_rule)
    context = ImputationContext(plans=plans, dataset=dataset_name, fold=int(fold), configuration=configuration,
                                device=device, options={"source_rule": source_rule}, codebrain=codebrain)
    imputers = build_imputers(method_names, context)

    if segmenter is not None:
        model = bridge.read_model_folder(Path(segmenter))
        segmenter_tag = bridge.external_tag(Path(segmenter))
    else:
        training = [c for c in split["train"] if c in labelled]
        folder = bridge.prepare_trained_segmenter(raw_dir, training, int(fold), seg_trainer, gpu_memory_gb, device,
                                                  num_processes, train_if_missing=train_segmenter,
                                                  recipe=seg_recipe)
        model = bridge.read_model_folder(folder)
        segmenter_tag = folder.name
    mapping = bridge.check_compatible(model, dataset_json, seg_label_map)
    logger.info("segmenter %s: %s", model.folder.name, mapping.describe())

    root = bridge.segmentation_folders(dataset_name, int(fold)).root
    output_dir = root / segmenter_tag / cases_tag / model_tag
    invalidate_if_changed(output_dir, {**model.fingerprint(), "tile_step_size": tile_step_size,
                                        "use_mirroring": use_mirroring, "precision": precision})
    state = RunState(model, imputers, output_dir, root / "imputed" / cases_tag / model_tag, device,
                     tile_step_size, use_mirroring, precision, mapping)
    for method in method_names:
        drop_stale_method_caches([state.imputed_dir / method, output_dir / "segmentations" / method],
                                 imputers[method], method)
    meta = {"dataset": dataset_name, "fold": int(fold), "cases": [c.case_id for c in evaluation_cases],
            "imputation_configuration": configuration, "codebrain_model": trainer, "source_rule": source_rule,
            "tile_step_size": tile_step_size, "use_mirroring": use_mirroring, "precision": precision}
    retrained = None
    if protocol != "fixed":
        setup = RetrainedSetup(raw_dir, dict(dataset_json), int(fold),
                               training_cases(raw_dir, [c for c in split["train"] if c in labelled], len(names)),
                               evaluation_cases, root, model_tag, cases_tag, model, seg_trainer, gpu_memory_gb,
                               device, num_processes, train_segmenter, tile_step_size, use_mirroring, precision,
                               seg_recipe)
        retrained = evaluate_retrained(setup, retrained_list, method_names, imputers, meta)
        if protocol == "retrained":
            return retrained
    rows = []
    for index, case in enumerate(evaluation_cases):
        logger.info("case %s (%d/%d)", case.case_id, index + 1, len(evaluation_cases))
        runner = CaseRunner(state, case)
        full = runner.segmentation(None, None)
        rows.append(score_row(case.case_id, FULL, None, runner.scores(full), full, output_dir))
        for scenario in scenario_list:
            for method in method_names:
                path = runner.segmentation(method, scenario)
                rows.append(score_row(case.case_id, method, scenario, runner.scores(path), path, output_dir))
    result = state.result
    result.rows = rows
    result.table = report.build_table(rows, scenario_list, method_names, {
        **meta, "protocol": "fixed", "segmenter": str(model.folder), "segmenter_folds": model.folds,
        "segmenter_budget": {"full": bridge.training_budget(model.folder)}, "mapping": mapping.to_json()})
    result.files = report.write_reports(output_dir, rows, result.table)
    result.retrained = retrained
    logger.info("segmentation evaluation: %d predicted, %d reused; tables in %s", result.predicted, result.reused,
                output_dir)
    return result


def _retrained_scenarios(names: Sequence[str], wanted: Sequence[str] | None) -> list[Scenario]:
    """The "3 -> 1" scenarios of the retrained protocol: all, or those whose missing sequence is named."""
    every = make_scenarios(names, "3to1")
    if not wanted:
        return every
    by_name = {s.label.lower(): s for s in every}
    unknown = [w for w in wanted if w.strip().lower() not in by_name]
    if unknown:
        raise InputError(f"--retrained-scenarios {', '.join(unknown)}: not a sequence of the dataset "
                         f"({', '.join(names)})")
    return [by_name[w.strip().lower()] for w in dict.fromkeys(wanted)]


