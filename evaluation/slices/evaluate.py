"""``evaluate_slices``, the API of ``codebrain_evaluate_slices``: CoPeDiT's missing-slice synthesis (its Table 3 task)
scored against the baselines on the fold's held-out cases, with an optional downstream nnU-Net segmentation.

For every held-out case of the fold (whole subjects, ``splits_final.json``), every missing length L and every
run of L consecutive slices (:mod:`evaluation.slices.scenarios`), each method of the registry that fills slices
(``copedit``, ``linear``, ``nearest``, ``zero``) gets the stack with the run's slices set to zero and fills them;
the filled slices are scored against the real ones (PSNR / SSIM, 2D and 3D). With a segmenter (``--segmenter``
an nnU-Net model folder, or ``--train-segmenter``: nnU-Net 3d_fullres trained on the fold's labelled training
cases by the segmentation harness, ``evaluation.segmentation.nnunet_bridge``), each filled stack, the stack with
the slices left missing (``zero``) and the complete stack are segmented, and the LV / RV / MYO Dice is computed on
the filled slices and on the whole stack. Which label of the segmenter is which structure comes from *its*
``dataset.json`` (``evaluation.segmentation.label_mapping.cardiac_structures``), the ground truth's from the
dataset's (the converter's 1 RV, 2 MYO, 3 LV).

Everything is cached, keyed by the method's model, the run, the case file and the segmenter, so a rerun reuses
finished rows and an interrupted run resumes::

    $codebrain_results/DatasetXXX_Name/slice_evaluation/fold_F/<configuration>/
        rows/<method>/CASE__L<length>_s<start>.json     one scored row (and the key it was computed for)
        imputed/<method>/L<length>_s<start>/CASE_0000.nii.gz   filled stacks (only with a segmenter)
        segmentations/<segmenter>/<method or complete>/...      the segmenter's label maps
        per_scenario.csv, table.md, table.csv, table.json
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from codebrain_seg import paths
from codebrain_seg.device import avoid_amx_for_3d_training
from codebrain_seg.errors import InputError, MissingFileError, UnknownNameError, UserError
from codebrain_seg.inference.copedit import resolve_configuration
from codebrain_seg.inference.copedit_slices import CARDIAC_CONFIGURATIONS
from codebrain_seg.inference.request import ImputationContext
from codebrain_seg.io import read_json, read_nifti, write_json, write_nifti
from codebrain_seg.raw_dataset import image_path, label_path, load_dataset_json
from codebrain_seg.run.methods import METHODS, slice_methods
from evaluation.segmentation import nnunet_bridge as bridge
from evaluation.segmentation.label_mapping import StructureMap, cardiac_structures
from evaluation.slices import report
from evaluation.slices.scenarios import (
    DEFAULT_LENGTHS,
    DEFAULT_RUNS_PER_CASE,
    missing_runs,
    slice_quality,
    structure_dice,
)
from planners.cardiac_preprocessing import field_of_view, file_slice_axis
from planners.plan_and_preprocess import load_plans, load_split

logger = logging.getLogger(__name__)

DEFAULT_METHODS = ("copedit", "linear", "nearest", "zero")
ROW_FORMAT = 1


@dataclass
class SliceEvaluation:
    """What :func:`evaluate_slices` made: the output folder, the rows, the table and the files written."""

    output_dir: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    table: dict[str, Any] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    computed: int = 0
    reused: int = 0


def resolve_methods(methods: Sequence[str] | None) -> list[str]:
    """The slice methods to run (default copedit, linear, nearest, zero); unknown or sequence-only names raise."""
    requested = list(DEFAULT_METHODS) if methods is None else [m.strip() for m in methods if m.strip()]
    unknown = [m for m in requested if m not in METHODS]
    if unknown:
        raise UnknownNameError(f"unknown method(s) {', '.join(unknown)}; slice methods: {', '.join(slice_methods())}")
    wrong = [m for m in requested if not METHODS[m].fills_slices]
    if wrong:
        raise InputError(f"{', '.join(wrong)} fill missing sequences, not missing slices; slice methods: "
                         f"{', '.join(slice_methods())}")
    if not requested:
        raise InputError("--methods names no method")
    return list(dict.fromkeys(requested))


def _check_protocol(lengths: Sequence[int], runs_per_case: int) -> list[int]:
    values = list(lengths)
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values):
        raise InputError(f"--lengths must be positive numbers of consecutive missing slices, got {values!r}")
    if isinstance(runs_per_case, bool) or not isinstance(runs_per_case, int) or runs_per_case < 1:
        raise InputError(f"--runs-per-case must be a positive integer, got {runs_per_case!r}")
    return sorted(set(values))


class _SegmentationStep:
    """The segmenter, its label meaning and the dataset's, and the cached label maps of the evaluation."""

    def __init__(self, model: Any, predictor: Any, prediction: StructureMap, truth: StructureMap, folder: Path) -> None:
        self.model, self.predictor, self.prediction, self.truth, self.folder = model, predictor, prediction, truth, \
            folder

    def fingerprint(self) -> dict[str, Any]:
        return {"segmenter": self.model.fingerprint(), "mapping": self.prediction.to_json()}

    def segment(self, image_file: Path, output: Path) -> dict[str, np.ndarray]:
        """Structure masks of the segmenter's label map of ``image_file`` (cached in ``output``)."""
        key_file = output.with_name(output.name.replace(".nii.gz", ".json"))
        key = {"input": [image_file.stat().st_size, image_file.stat().st_mtime_ns], **self.fingerprint()}
        if not (output.is_file() and key_file.is_file() and read_json(key_file) == json.loads(json.dumps(key))):
            images, properties = self.predictor.read_images([image_file])
            self.predictor.predict(images, properties, output)
            write_json(key_file, key)
        return self.prediction.masks(read_nifti(output, dtype=None).data)


def _segmentation_step(dataset_name: str, raw_dir: Path, dataset_json: dict[str, Any], split: dict[str, list[str]],
                       fold: int, output_dir: Path, segmenter: str | Path | None, train_segmenter: bool,
                       seg_trainer: str, seg_recipe: str, seg_gpu_memory_gb: float | None, seg_label_map: str | None,
                       device: str, num_processes: int, tile_step_size: float, use_mirroring: bool, precision: str,
                       predictor: Any | None) -> _SegmentationStep | None:
    if predictor is not None:  # an already loaded segmenter (the Python API; tests pass a stand-in)
        model = predictor.model
    elif segmenter is not None:
        model = bridge.read_model_folder(Path(segmenter))
    elif train_segmenter:
        training = [c for c in split["train"] if label_path(raw_dir, c).is_file()]
        folder = bridge.prepare_trained_segmenter(raw_dir, training, fold, seg_trainer, seg_gpu_memory_gb, device,
                                                  num_processes, train_if_missing=True, recipe=seg_recipe)
        model = bridge.read_model_folder(folder)
    else:
        return None
    if len(model.channel_names) != 1:
        raise bridge.SegmenterError(f"segmenter {model.folder} takes {len(model.channel_names)} channels "
                                    f"({model.channel_names}); a short-axis stack has one")
    prediction = cardiac_structures(model.dataset_json, seg_label_map, f"segmenter {model.folder}")
    truth = cardiac_structures(dataset_json, None, f"{raw_dir}/dataset.json")
    if predictor is None:
        predictor = bridge.Segmenter(model, device, tile_step_size, use_mirroring,
                                     bridge.resolve_precision(precision, device))
    tag = Path(model.folder).name if segmenter is None else bridge.external_tag(Path(segmenter))
    logger.info("segmenter %s: LV %s, RV %s, MYO %s (%s)", model.folder, *(list(prediction.structures[s]) for s in
                                                                         ("LV", "RV", "MYO")), prediction.source)
    return _SegmentationStep(model, predictor, prediction, truth, output_dir / "segmentations" / tag)


def _imputer_key(imputer: Any, method: str) -> dict[str, Any]:
    return imputer.fingerprint() if hasattr(imputer, "fingerprint") else {"method": method}


def evaluate_slices(dataset: str | int, fold: int = 0, configuration: str | None = None,
                    methods: Sequence[str] | None = None, lengths: Sequence[int] = DEFAULT_LENGTHS,
                    runs_per_case: int = DEFAULT_RUNS_PER_CASE, device: str = "cpu", checkpoint: str = "final",
                    prompts: str = "learned", ddim_steps: int | None = None, segmenter: str | Path | None = None,
                    train_segmenter: bool = False, seg_trainer: str = bridge.DEFAULT_TRAINER,
                    seg_recipe: str = "default", seg_gpu_memory_gb: float | None = None,
                    seg_label_map: str | None = None, num_processes: int = 2, tile_step_size: float = 0.5,
                    use_mirroring: bool = True, precision: str = "auto", max_cases: int | None = None,
                    segmenter_predictor: Any | None = None) -> SliceEvaluation:
    """Score the slice methods on the fold's held-out cases and write the tables (module docstring).

    Args:
        dataset: a missing-slice dataset (``codebrain_convert_cardiac``), planned with its splits.
        fold: fold of ``splits_final.json``; its validation cases (whole subjects) are evaluated.
        configuration: the cardiac configuration of the CoPeDiT model (default: the one trained for the fold, else
            ``3d_cardiac_cpu``); its in-plane window is the scored field of view for every method.
        methods: slice methods of the registry (default copedit, linear, nearest, zero).
        lengths: missing lengths in slices (default 1, 2, 3).
        runs_per_case: interior runs per case and length (default 3).
        device: ``cpu`` or ``cuda`` for CoPeDiT and the segmenter.
        checkpoint, prompts, ddim_steps: the CoPeDiT model (``final`` checkpoint, learned prompts, the
            configuration's DDIM steps by default).
        segmenter: an nnU-Net model folder (``Trainer__Plans__configuration``) for the Dice columns.
        train_segmenter: train the fold's segmenter (nnU-Net 3d_fullres, ``seg_trainer``, ``seg_recipe``,
            ``seg_gpu_memory_gb``) on its labelled training cases if not trained yet.
        seg_label_map: ``'LV=3;RV=1;MYO=2'``, the segmenter's labels when its dataset.json does not say.
        num_processes, tile_step_size, use_mirroring, precision: nnU-Net's preprocessing and prediction.
        max_cases: evaluate only the first N held-out cases (quick runs).
        segmenter_predictor: an already loaded segmenter (``.model``, ``.read_images``, ``.predict``), instead of
            ``segmenter``.
    """
    avoid_amx_for_3d_training()  # 3D networks run (and with train_segmenter, train) here: before any convolution
    method_names = resolve_methods(methods)
    lengths = _check_protocol(lengths, runs_per_case)
    if device not in ("cpu", "cuda"):
        raise InputError(f"device must be cpu or cuda, got {device!r}")
    if segmenter is not None and train_segmenter:
        raise InputError("give either --segmenter (an existing nnU-Net model) or --train-segmenter, not both")
    raw_dir = paths.raw_dataset_dir(dataset)
    dataset_name = raw_dir.name
    dataset_json = load_dataset_json(raw_dir)
    if dataset_json.get("task") != "missing_slices":
        raise InputError(f"{dataset_name} is not a missing-slice dataset (codebrain_convert_cardiac); for missing "
                         "sequences use codebrain_evaluate_imputation")
    preprocessed = paths.preprocessed_root() / dataset_name
    plans = load_plans(preprocessed)
    split = load_split(preprocessed, fold)
    cases = list(split["val"])[: max_cases if max_cases else None]
    if not cases:
        raise InputError(f"fold {fold} of {dataset_name} has no held-out case to evaluate")
    configuration = configuration or resolve_configuration(dataset_name, fold, device, {"prompts": prompts},
                                                           CARDIAC_CONFIGURATIONS)
    if configuration not in plans["configurations"]:
        raise UnknownNameError(f"configuration {configuration!r} is not in the plans of {dataset_name}; planned: "
                               f"{', '.join(sorted(plans['configurations']))}")
    planned = plans["configurations"][configuration]
    context = ImputationContext(plans=plans, dataset=dataset_name, fold=fold, configuration=configuration,
                                device=device, options={"checkpoint": checkpoint, "prompts": prompts,
                                                        "ddim_steps": ddim_steps})
    imputers = {m: METHODS[m].build_slice_imputer(context) for m in method_names}  # a missing model fails here
    output_dir = paths.results_dataset_dir(dataset_name) / "slice_evaluation" / f"fold_{fold}" / configuration
    segmentation = _segmentation_step(dataset_name, raw_dir, dataset_json, split, fold, output_dir, segmenter,
                                      train_segmenter, seg_trainer, seg_recipe, seg_gpu_memory_gb, seg_label_map,
                                      device, num_processes, tile_step_size, use_mirroring, precision,
                                      segmenter_predictor)
    result = SliceEvaluation(output_dir)
    skipped: dict[str, str] = {}
    for index, case_id in enumerate(cases):
        logger.info("case %s (%d/%d)", case_id, index + 1, len(cases))
        rows, reasons = _evaluate_case(raw_dir, case_id, planned, imputers, lengths, runs_per_case, output_dir,
                                       segmentation, result)
        result.rows += rows
        skipped.update(reasons)
    meta = {"dataset": dataset_name, "fold": fold, "configuration": configuration, "methods": method_names,
            "lengths": lengths, "runs_per_case": runs_per_case, "cases": cases, "cases_count": len(cases),
            "field_of_view_mm": planned["in_plane_crop_mm"], "checkpoint": checkpoint, "prompts": prompts,
            "ddim_steps": ddim_steps, "skipped_reasons": skipped,
            "segmenter": str(segmentation.model.folder) if segmentation else None,
            "mapping": ({"segmenter": segmentation.prediction.to_json(), "ground_truth": segmentation.truth.to_json()}
                        if segmentation else None),
            "not_computed": "FID and FVD (their Inception / I3D weights cannot be downloaded here)"}
    result.table = report.build_table(result.rows, method_names, lengths, meta)
    result.files = report.write_reports(output_dir, result.rows, result.table)
    logger.info("slice evaluation: %d rows computed, %d reused; tables in %s", result.computed, result.reused,
                output_dir)
    return result


def _evaluate_case(raw_dir: Path, case_id: str, planned: dict[str, Any], imputers: dict[str, Any],
                   lengths: Sequence[int], runs_per_case: int, output_dir: Path,
                   segmentation: _SegmentationStep | None, result: SliceEvaluation
                   ) -> tuple[list[dict[str, Any]], dict[str, str]]:
    source = image_path(raw_dir, case_id, 0)
    volume = read_nifti(source)
    truth = np.asarray(volume.data, np.float32)
    axis = file_slice_axis(volume.affine, int(planned["slice_axis"]))[0]
    fov = field_of_view(truth.shape, volume.affine, volume.spacing, planned)
    labels = label_path(raw_dir, case_id)
    truth_masks = complete_masks = None
    if segmentation is not None:
        if not labels.is_file():
            raise MissingFileError(f"case {case_id} has no label map ({labels}): the Dice columns need labelled "
                                   "held-out cases")
        truth_masks = segmentation.truth.masks(read_nifti(labels, dtype=None).data)
        complete_masks = segmentation.segment(source, segmentation.folder / "complete" / f"{case_id}.nii.gz")
    stamp = [source.stat().st_size, source.stat().st_mtime_ns]
    rows, reasons = [], {}
    for length in lengths:
        for run in missing_runs(truth.shape[axis], length, runs_per_case):
            flags = run.flags(truth.shape[axis])
            base = {"case": case_id, "length": run.length, "start": run.start, "run": run.name,
                    "slices": ",".join(map(str, run.slices))}
            if segmentation is not None:
                rows.append({**base, "method": report.COMPLETE, "skipped": None,
                             **structure_dice(complete_masks, truth_masks, flags, axis)})
            for method, imputer in imputers.items():
                row_file = output_dir / "rows" / method / f"{case_id}__{run.name}.json"
                key = json.loads(json.dumps({"format": ROW_FORMAT, "input": stamp, "method": _imputer_key(imputer, method),
                                             "segmenter": segmentation.fingerprint() if segmentation else None,
                                             "field_of_view_mm": planned["in_plane_crop_mm"]}, default=str))
                cached = read_json(row_file) if row_file.is_file() else None
                if isinstance(cached, dict) and cached.get("key") == key:
                    rows.append(cached["row"])
                    result.reused += 1
                    if cached["row"].get("skipped"):
                        reasons[method] = cached["row"]["skipped"]
                    continue
                row = {**base, "method": method, "skipped": None}
                corrupted = np.moveaxis(truth.copy(), axis, -1)
                corrupted[..., flags] = 0.0
                corrupted = np.moveaxis(corrupted, -1, axis)
                try:
                    filled, _ = imputer.impute_slices(corrupted, volume.affine, volume.spacing, flags,
                                                      f"case {case_id}")
                except UserError as error:  # e.g. a run touching every slab of the model
                    row["skipped"] = str(error)
                    reasons[method] = str(error)
                else:
                    row.update(slice_quality(filled, truth, flags, axis, fov))
                    if segmentation is not None:
                        imputed = output_dir / "imputed" / method / run.name / f"{case_id}_0000.nii.gz"
                        write_nifti(imputed, filled.astype(np.float32), volume.affine, volume.header)
                        masks = segmentation.segment(imputed, segmentation.folder / method / run.name
                                                     / f"{case_id}.nii.gz")
                        row.update(structure_dice(masks, truth_masks, flags, axis))
                write_json(row_file, {"key": key, "row": row})
                result.computed += 1
                rows.append(row)
    if not rows:
        reasons["protocol"] = f"case {case_id}: {truth.shape[axis]} slices leave no interior run of the lengths"
    return rows, reasons
