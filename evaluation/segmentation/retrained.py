"""The retrained protocol (CoPeDiT's Table 9): segmenters trained on what they will be given, and the "Missing"
segmenter a clinician would pick instead of imputation.

Per "3 -> 1" scenario (one sequence missing):

* **Missing**: an nnU-Net segmenter trained and evaluated on the three available sequences only (3 input
  channels);
* **<method>**: a segmenter trained on the fold's training cases with the missing sequence replaced by the
  method's imputation, evaluated on the evaluation cases imputed the same way. The imputing model is the fold's
  (trained on the fold's training cases), so it never saw an evaluation case;
* **full**: the fold's segmenter with every real sequence (the fixed protocol's).

Recovery is measured against Missing: ``(method - Missing) / (full - Missing)``. Every segmenter trains with the
same nnU-Net trainer and plans as the full one; the budget of each is in the table. Files::

    $codebrain_results/DatasetXXX_Name/segmentation/fold_F/
        imputed/train/<configuration>/<method>/<pattern>/CASE_XXXX.nii.gz   the training cases imputed
        retrained/<configuration>/<pattern>/<missing|method>/nnUNet_{raw,preprocessed,results}/...
        retrained/<segmenter>/<cases>/<configuration>/segmentations/<missing|method>/<pattern>/CASE.nii.gz,
            per_case.csv, table.md, table.csv, table.json, dice_bars.png

Everything is cached and resumable like the fixed protocol (nnU-Net resumes a segmenter's training from its
latest checkpoint).
"""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from codebrain_seg.inference.request import Imputer
from codebrain_seg.io import read_json, write_json
from codebrain_seg.raw_dataset import FILE_ENDING, channel_names
from evaluation.segmentation import nnunet_bridge as bridge
from evaluation.segmentation import report
from evaluation.segmentation.cases import FULL, ZERO_METHOD, EvaluationCase, Scenario
from evaluation.segmentation.runner import (
    MISSING,
    CaseRunner,
    RunState,
    SegmentationEvaluation,
    drop_stale_method_caches,
    score_row,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrainedSetup:
    """What the retrained protocol needs from the fixed protocol's run (see ``evaluate_segmentation``)."""

    raw_dir: Path
    dataset_json: dict[str, Any]
    fold: int
    training_cases: list[EvaluationCase]
    evaluation_cases: list[EvaluationCase]
    root: Path  # segmentation/fold_F
    model_tag: str
    cases_tag: str
    full_model: bridge.ModelInfo
    trainer: str
    gpu_memory_gb: float | None
    device: str
    num_processes: int
    train_if_missing: bool
    tile_step_size: float
    use_mirroring: bool
    precision: str
    recipe: str = "default"


def training_cases(raw_dir: Path, case_ids: Sequence[str], num_channels: int) -> list[EvaluationCase]:
    """The fold's labelled training cases as :class:`EvaluationCase` (files per channel and label)."""
    return [EvaluationCase(case, [raw_dir / "imagesTr" / f"{case}_{c:04d}{FILE_ENDING}" for c in range(num_channels)],
                           raw_dir / "labelsTr" / f"{case}{FILE_ENDING}") for case in sorted(case_ids)]


def _row_dataset_json(setup: RetrainedSetup, scenario: Scenario, row: str) -> dict[str, Any]:
    """The export's dataset.json: the Missing segmenter's holds the available channels only."""
    if row != MISSING:
        return dict(setup.dataset_json)
    names = channel_names(setup.dataset_json)
    kept = {str(i): names[c] for i, c in enumerate(c for c, given in enumerate(scenario.available) if given)}
    return {**setup.dataset_json, "channel_names": kept}


def _segmenter_for(setup: RetrainedSetup, scenario: Scenario, row: str, imputing: RunState) -> Path:
    """Train (or reuse) the segmenter of one scenario and row; its model folder.

    A method's segmenter trains on that method's imputations: when the imputing model changed (its fingerprint,
    ``imputer.json``), the imputed training cases and the segmenter trained on them are dropped and remade.
    """
    folders = bridge.NnunetFolders(setup.root / "retrained" / setup.model_tag / scenario.pattern / row)
    dataset_json = _row_dataset_json(setup, scenario, row)
    if row != MISSING:
        drop_stale_method_caches([imputing.imputed_dir / row, folders.root], imputing.imputer(row), row)

    def export() -> Path:
        images: dict[str, list[Path]] = {}
        for case in setup.training_cases:
            if row == MISSING:
                images[case.case_id] = [case.images[c] for c, given in enumerate(scenario.available) if given]
            else:
                files = list(case.images)
                imputed = CaseRunner(imputing, case).imputed_files(row, scenario)
                for channel, path in zip(scenario.missing, imputed):
                    files[channel] = path
                images[case.case_id] = files
        return bridge.export_cases(folders, setup.raw_dir.name, dataset_json, images,
                                   {case.case_id: case.label for case in setup.training_cases})

    what = f"segmenter of the retrained protocol ({report.display_name(row)}, missing {scenario.label})"
    return bridge.prepare_segmenter(folders, setup.raw_dir.name, export, setup.trainer, setup.gpu_memory_gb,
                                    setup.device, setup.num_processes, setup.train_if_missing, what, setup.recipe)


def _drop_if_segmenter_changed(folder: Path, settings: dict[str, Any]) -> None:
    """Cached segmentations of one row and scenario are dropped when its segmenter or the prediction settings
    changed (``segmenter.json`` in the folder records them)."""
    record = folder / "segmenter.json"
    if record.is_file() and read_json(record) != settings:
        logger.warning("segmenter of %s changed: recomputing its segmentations", folder)
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(record, settings)


def evaluate_retrained(setup: RetrainedSetup, scenarios: Sequence[Scenario], methods: Sequence[str],
                       imputers: dict[str, Imputer], meta: dict[str, Any]) -> SegmentationEvaluation:
    """Train every segmenter the protocol needs, segment and score the evaluation cases, write the tables.

    Args:
        scenarios: the "3 -> 1" scenarios to run (each trains ``1 + len(methods)`` segmenters).
        methods: imputation methods (zero-fill is left out: a segmenter trained on an all-zero channel is the
            Missing segmenter with a wasted input).
        meta: the fixed protocol's table metadata (dataset, fold, cases, imputation model ...).
    """
    methods = [m for m in methods if m != ZERO_METHOD]
    output_dir = (setup.root / "retrained" / setup.full_model.folder.name / setup.cases_tag / setup.model_tag)
    imputed_train = RunState(None, imputers, output_dir, setup.root / "imputed" / "train" / setup.model_tag,
                             setup.device, setup.tile_step_size, setup.use_mirroring, setup.precision)
    imputed_eval = setup.root / "imputed" / setup.cases_tag / setup.model_tag
    prediction = dict(tile_step_size=setup.tile_step_size, use_mirroring=setup.use_mirroring,
                      precision=setup.precision)
    full_state = RunState(setup.full_model, imputers, output_dir, imputed_eval, setup.device,
                          mapping=bridge.check_compatible(setup.full_model, setup.dataset_json), **prediction)
    result = full_state.result
    rows: list[dict[str, Any]] = []
    budget = {"full": bridge.training_budget(setup.full_model.folder)}
    _drop_if_segmenter_changed(output_dir / "segmentations" / FULL, {**setup.full_model.fingerprint(), **prediction})
    for case in setup.evaluation_cases:
        path = CaseRunner(full_state, case).segmentation(None, None)
        rows.append(score_row(case.case_id, FULL, None, CaseRunner(full_state, case).scores(path), path, output_dir))
    for scenario in scenarios:
        for row in [MISSING, *methods]:
            model = bridge.read_model_folder(_segmenter_for(setup, scenario, row, imputed_train))
            channels = [c for c, given in enumerate(scenario.available) if given] if row == MISSING else None
            mapping = bridge.check_compatible(model, _row_dataset_json(setup, scenario, row))
            state = RunState(model, imputers, output_dir, imputed_eval, setup.device, mapping=mapping,
                             channels=channels, **prediction)
            _drop_if_segmenter_changed(output_dir / "segmentations" / row / scenario.pattern,
                                       {**model.fingerprint(), **prediction})
            state.result = result  # one set of counters for the whole protocol
            budget[f"{report.display_name(row)}, missing {scenario.label}"] = bridge.training_budget(model.folder)
            for case in setup.evaluation_cases:
                runner = CaseRunner(state, case)
                path = runner.segmentation(None if row == MISSING else row, scenario)
                rows.append(score_row(case.case_id, row, scenario, runner.scores(path), path, output_dir))
    result.rows = rows
    result.imputed += imputed_train.result.imputed
    result.imputed_reused += imputed_train.result.imputed_reused
    result.table = report.build_table(rows, scenarios, [MISSING, *methods],
                                      {**meta, "protocol": "retrained", "segmenter": str(setup.full_model.folder),
                                       "segmenter_folds": setup.full_model.folds, "segmenter_budget": budget},
                                      baseline=MISSING)
    result.files = report.write_reports(output_dir, rows, result.table)
    logger.info("retrained protocol: %d predicted, %d reused; tables in %s", result.predicted, result.reused,
                output_dir)
    return result
