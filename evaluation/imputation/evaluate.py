"""The imputation evaluation harness: every case x every missing pattern x every method, scored and tabulated.

For each complete case (all sequences present) and each of the ``2^C - 2`` patterns, the sequences the pattern
drops are zeroed, every method fills them through the registry (``codebrain_seg.run.methods.get_imputer``) and
the filled sequences are scored against the originals:

* **paper** protocol (the CodeBrain reference implementation's evaluation): the case is preprocessed as in training
  (same crop, each sequence divided by its own 99.5th brain percentile, clipped to [0, 1]); the middle K slices
  (K = plans ``evaluation_slices`` unless given) of the brain's extent are scored per 2D slice over the whole
  in-plane crop (background included), prediction clamped to [0, 1]. A method with ``impute_normalised`` (CodeBrain) gets
  exactly the reference's test input, these normalised slices with the missing channels zeroed; any other method
  imputes the whole volume in original intensities and its output is brought into the same space (same
  re-indexing, divided by the intensity the registry's methods give to normalised 1: the training set's median
  99.5th brain percentile of the sequence, or the method's own ``reference_upper``).
* **volume** protocol (BraSyn-like): prediction and ground truth each scaled by their own 0.5-99.5 brain
  percentiles to [0, 1]; SSIM/PSNR/MAE inside the brain, and, when a label map exists, inside the tumour
  (label > 0) and the healthy brain.

Outputs (``$codebrain_results/DatasetXXX_Name/CodeBrain__<plans>__<configuration>/fold_F/imputation_eval/<cases>/``,
one folder per case selection, whatever the methods — the configuration fixes the crop and the slices scored,
so zero/mean baselines land beside the model they are compared with). A CodeBrain variant (``ablation``,
``loss_weights``, ``variant``, ``code_dim``) is evaluated into its own model folder
(``CodeBrain-v1__<plans>__<configuration>/...``), so it never overwrites the plain method's evaluation; the v1
``relevant`` source rule adds ``-source_relevant`` to the cases folder name:

* ``scores_paper.csv`` (one row per slice), ``scores_volume.csv`` (one row per case, region and pair);
* ``pairs.csv`` (pair means), ``summary.csv`` / ``summary.json`` (per-pattern, O->O, M->O, overall, variance;
  settings, cases and methods), ``tables.md`` (the Markdown tables);
* ``figures/pattern_<bits>.png`` (inputs, ground truth, imputed, error map of one case per pattern),
  ``figures/codes_<bits>.png`` (CodeBrain's predicted vs oracle code maps and confidence),
  ``figures/<metric>_per_pattern_<protocol>.png``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from codebrain_seg import paths
from codebrain_seg.errors import InputError, UnknownNameError
from codebrain_seg.inference.model_folders import (
    default_configuration,
    model_folder_prefix,
)
from codebrain_seg.inference.request import ImputationContext, Imputer
from codebrain_seg.io import atomic_path, write_json
from codebrain_seg.metrics import slice_metrics, volume_metrics
from codebrain_seg.plans import Plans
from codebrain_seg.results_layout import (
    CODEBRAIN_FOLDER,
    imputation_eval_folder,
    model_folder_name,
)
from codebrain_seg.run.methods import METHODS, get_imputer
from codebrain_seg.variants import CodeBrainVariant
from evaluation.imputation import figures
from evaluation.imputation.aggregate import (
    all_patterns,
    describe_pattern,
    markdown_table,
    pair_means,
    parse_pattern,
    summarise,
    summary_rows,
    write_csv,
)
from evaluation.imputation.cases import CaseFiles, _folder_cases, find_cases, load_case  # noqa: F401 (API)
from planners.experiment_planner import get_configuration
from planners.plan_and_preprocess import load_plans
from planners.slice_preprocessing import (
    middle_slices,
    prepare_case,
    to_preprocessed_space,
)

logger = logging.getLogger(__name__)

PROTOCOLS = ("paper", "volume")
DEFAULT_METHODS = ("codebrain", "zero", "mean")
TRAINER_NAME = CODEBRAIN_FOLDER


def evaluation_folder(dataset: str | int, fold: int | str, configuration: str, cases: str,
                      trainer: str = TRAINER_NAME, source_rule: str = "random") -> Path:
    """Default output folder (module docstring); ``cases`` = val, test or a folder (its name is used); ``trainer``
    the model folder prefix of a variant (``CodeBrain-v1``, :func:`model_folder_prefix`)."""
    return imputation_eval_folder(dataset, fold, configuration, cases, trainer, source_rule)


def build_methods(names: Sequence[str], plans: dict[str, Any], dataset: str, fold: int | str, configuration: str,
                  device: str = "cpu", options: dict[str, Any] | None = None,
                  codebrain: CodeBrainVariant | None = None) -> dict[str, Imputer]:
    """Build every requested method through the registry (unknown names fail before any work); ``codebrain`` is
    the CodeBrain variant whose folder learned CodeBrain methods load."""
    unknown = [name for name in names if name not in METHODS]
    if unknown:
        raise UnknownNameError(f"unknown imputation method(s) {', '.join(unknown)}; known: "
                               f"{', '.join(sorted(METHODS))}")
    context = ImputationContext(plans=plans, dataset=dataset, fold=fold, configuration=configuration, device=device,
                                options=dict(options or {}), codebrain=codebrain or CodeBrainVariant())
    return {name: get_imputer(name, context) for name in names}


def _reference_upper(imputer: Imputer, plans: dict[str, Any]) -> np.ndarray:
    """The intensity a method gives to normalised 1 per sequence (registry convention: the plans' reference)."""
    own = getattr(imputer, "reference_upper", None)
    if own is not None:
        return np.asarray(own, dtype=np.float32)
    return np.array(Plans(plans).reference_uppers, dtype=np.float32)


def evaluate_case(case_id: str, images: np.ndarray, label: np.ndarray | None, plans: dict[str, Any],
                  configuration: dict[str, Any], methods: dict[str, Imputer], protocols: Sequence[str],
                  patterns: Sequence[str], keep_figure_slices: bool = False) -> dict[str, Any]:
    """Score one complete case (RAS voxel order) for every pattern and method.

    Returns:
        ``{"paper": [rows], "volume": [rows], "figures": {pattern: {...}} (with keep_figure_slices),
        "seconds": {method: imputation seconds}}``.
    """
    names = list(plans["channel_names"])
    everything = np.ones(len(names), dtype=bool)
    target_stack, _, properties = prepare_case(images, everything, np.eye(4), plans, configuration)
    scored = middle_slices(target_stack.shape[1], int(configuration["evaluation_slices"]))
    figure_position = len(scored) // 2
    brain = (images != 0).any(axis=0)
    uppers = {method: _reference_upper(imputer, plans) for method, imputer in methods.items()}
    result: dict[str, Any] = {"paper": [], "volume": [], "figures": {}, "seconds": {m: 0.0 for m in methods}}
    want_slices = "paper" in protocols or keep_figure_slices
    for pattern in patterns:
        available = np.array(parse_pattern(pattern))
        masked = images.copy()
        masked[~available] = 0.0
        missing = np.flatnonzero(~available)
        figure_entry = {"target": target_stack[:, scored[figure_position]], "predictions": {},
                        "slice": int(scored[figure_position])}
        for method, imputer in methods.items():
            start = time.perf_counter()
            on_slices = want_slices and hasattr(imputer, "impute_normalised")
            output = None
            if "volume" in protocols or (want_slices and not on_slices):
                output = imputer.impute(masked, available)
            if on_slices:
                # The reference's setting: the normalised ground-truth slices with the missing channels zeroed.
                zero_filled = target_stack[:, scored] * available[:, None, None, None]
                predicted = np.clip(imputer.impute_normalised(zero_filled, available)[missing], 0.0, 1.0)
            elif want_slices:
                predicted = to_preprocessed_space(output[missing], properties)[:, scored]
                predicted = np.clip(predicted / uppers[method][missing, None, None, None], 0.0, 1.0)
            result["seconds"][method] += time.perf_counter() - start
            base = {"method": method, "case": case_id, "pattern": pattern}
            if keep_figure_slices:
                slice_images = np.zeros_like(figure_entry["target"])
                slice_images[missing] = predicted[:, figure_position]
                figure_entry["predictions"][method] = slice_images
            if "paper" in protocols:
                for index, channel in enumerate(missing):
                    scores = slice_metrics(predicted[index], target_stack[channel][scored])
                    for position, slice_index in enumerate(scored):
                        result["paper"].append({**base, "protocol": "paper", "region": "image",
                                                "missing": names[channel], "slice": int(slice_index),
                                                **{k: float(v[position]) for k, v in scores.items()}})
            if "volume" in protocols:
                for channel in missing:
                    regions = volume_metrics(output[channel], images[channel], brain, label)
                    for region, scores in regions.items():
                        result["volume"].append({**base, "protocol": "volume", "region": region,
                                                 "missing": names[channel], **scores})
        if keep_figure_slices:
            result["figures"][pattern] = figure_entry
            codebrain = methods.get("codebrain")
            if codebrain is not None and hasattr(codebrain, "predictor"):
                full = target_stack[:, scored[figure_position]][None]
                zero_filled = full * available[None, :, None, None]
                prediction = codebrain.predictor.predict_slices(zero_filled, available=available)
                figure_entry["codes"] = {"predicted": prediction["levels"][0].numpy(),
                                         "oracle": codebrain.predictor.oracle_levels(full)[0].numpy(),
                                         "confidence": prediction["confidence"][0].numpy()
                                         if "confidence" in prediction else None,
                                         "layout": codebrain.predictor.code_layout()}
    return result


def write_figures(out_dir: Path, case_id: str, figure_data: dict[str, Any], summary: dict[str, Any],
                  channel_names: Sequence[str]) -> list[Path]:
    """All PNG figures (module docstring); returns their paths."""
    written = []
    folder = out_dir / "figures"
    for pattern, entry in figure_data.items():
        path = folder / f"pattern_{pattern}.png"
        figures.pattern_figure(path, channel_names, pattern, entry["target"], entry["predictions"],
                               title=f"{case_id}, slice {entry['slice']}: {describe_pattern(pattern, channel_names)}")
        written.append(path)
        codes = entry.get("codes")
        if codes is not None:
            given = [i for i, flag in enumerate(parse_pattern(pattern)) if flag]
            path = folder / f"codes_{pattern}.png"
            layout = codes["layout"]
            missing = [name for name, flag in zip(channel_names, parse_pattern(pattern)) if not flag]
            shown = missing if layout["variant"] == "v1" else None  # v1: the codes decoded, those of the missing
            figures.code_map_figure(path, entry["target"][given[0]], codes["predicted"], codes["oracle"],
                                    codes["confidence"], layout["class_counts"], quantizer=layout["quantizer"],
                                    groups=layout["groups"], shown_groups=shown,
                                    title=f"CodeBrain code maps, {case_id} slice {entry['slice']}, pattern {pattern}")
            written.append(path)
    for protocol, regions in summary.items():
        for region, summaries in regions.items():
            suffix = protocol if region in ("image", "brain") else f"{protocol}_{region}"
            for metric in ("psnr", "ssim", "mae"):
                path = folder / f"{metric}_per_pattern_{suffix}.png"
                figures.metric_per_pattern_figure(path, summaries, channel_names, metric,
                                                  title=f"{protocol} protocol, {region}")
                written.append(path)
    return written


CASE_CACHE = ".cases"


def _case_key(case: CaseFiles, settings: dict[str, Any]) -> str:
    """What a case's scores depend on: its files (size, mtime), the methods' models and the settings."""
    files = [str(path) for path in case.images] + ([str(case.label)] if case.label else [])
    stamps = {name: [Path(name).stat().st_size, Path(name).stat().st_mtime_ns] for name in files}
    payload = json.dumps({"files": stamps, **settings}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def _cached_case(out_dir: Path, case_id: str, key: str) -> dict[str, Any] | None:
    """The scores of a case from an earlier (perhaps interrupted) run with the same key, else None."""
    path = out_dir / CASE_CACHE / f"{case_id}.json"
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # absent, or damaged: score the case again
    if not isinstance(cached, dict) or cached.get("key") != key:
        return None
    return {**cached["result"], "figures": {}}


def _cache_case(out_dir: Path, case_id: str, key: str, result: dict[str, Any]) -> None:
    """Keep a case's scores (written atomically) so that a rerun after an interruption skips it."""
    kept = {name: value for name, value in result.items() if name != "figures"}
    write_json(out_dir / CASE_CACHE / f"{case_id}.json", {"key": key, "result": kept})


def _remove_stale_outputs(out_dir: Path, protocols: Sequence[str]) -> None:
    """Drop what an earlier run in the same folder wrote and this run will not rewrite (other protocol, figures)."""
    for protocol in PROTOCOLS:
        if protocol not in protocols:
            (out_dir / f"scores_{protocol}.csv").unlink(missing_ok=True)
    if (out_dir / "figures").is_dir():
        for pattern in ("pattern_*.png", "codes_*.png", "*_per_pattern_*.png"):
            for path in (out_dir / "figures").glob(pattern):
                path.unlink()


def evaluate_imputation(dataset: str | int, fold: int | str = 0, configuration: str | None = None, cases: str = "val",
                        protocols: Sequence[str] = PROTOCOLS, methods: Sequence[str] = DEFAULT_METHODS,
                        device: str = "cpu", checkpoint: str = "final", batch_size: int | None = None,
                        output_dir: Path | None = None, patterns: Sequence[str] | None = None,
                        figure_cases: int = 1, evaluation_slices: int | None = None, *, ablation: str = "none",
                        loss_weights: Sequence[float] | str | None = None, variant: str = "cvpr",
                        code_dim: int | None = None, source_rule: str = "random", seed_index: int = 0,
                        code_decoding: str = "expected") -> Path:
    """Run the harness (module docstring) and write every output; returns the output folder.

    Args:
        dataset: dataset id or name (plans from ``$codebrain_preprocessed``).
        fold: cross-validation fold (its validation cases for ``cases='val'``, its model for learned methods).
        configuration: plans configuration (crop, slices scored, the model's configuration); default
            :func:`codebrain_seg.inference.model_folders.default_configuration`.
        cases: ``val``, ``test`` or a folder (see :func:`find_cases`).
        protocols: any of ``paper``, ``volume``.
        methods: registered imputation methods.
        device: device for learned methods.
        checkpoint: ``final``, ``best`` or ``latest`` for learned methods.
        batch_size: slices per forward pass for learned methods.
        output_dir: where to write (default :func:`evaluation_folder`).
        patterns: subset of the patterns (default all ``2^C - 2``).
        figure_cases: number of cases (first ones) whose slices are kept for the figures.
        evaluation_slices: middle slices per case scored by the paper protocol (default: the configuration's
            ``evaluation_slices``, 80 as in the reference).
        ablation, loss_weights, variant, code_dim: the CodeBrain variant evaluated (same meaning as
            ``codebrain_train``'s options): its model is loaded from, and the outputs written to, its own folder.
        source_rule: v1 models: ``random`` (default) or ``relevant`` F_c source.
        seed_index: which seed of a seeded experiment (``codebrain_ablate --seeds``) to load: K > 0 is the
            ``-seedK`` folder, 0 the ordinary one.
        code_decoding: codebrain: ``expected`` (default) or the reference's ``count``; it keys the evaluation (a
            rerun with the other one replaces it).
    """
    protocols = list(dict.fromkeys(protocols))
    bad = [p for p in protocols if p not in PROTOCOLS]
    if bad or not protocols:
        raise InputError(f"protocols must be among {PROTOCOLS}, got {protocols}")
    if not methods:
        raise InputError("no method to evaluate")
    dataset_name = paths.resolve_dataset(dataset)
    codebrain = CodeBrainVariant(ablation, loss_weights, variant, code_dim, seed_index)  # type: ignore[arg-type]
    trainer = model_folder_prefix(replace(codebrain, loss_weights=None))
    configuration = configuration or default_configuration(dataset_name, fold, device, trainer)
    trainer = model_folder_prefix(codebrain, dataset_name, configuration)
    variant_options = {"ablation": ablation, "loss_weights": loss_weights, "variant": variant, "code_dim": code_dim}
    plans = load_plans(paths.preprocessed_root() / dataset_name)
    config = get_configuration(plans, configuration)
    if evaluation_slices is not None:
        if int(evaluation_slices) < 1:
            raise InputError(f"evaluation_slices must be >= 1, got {evaluation_slices}")
        config = dict(config, evaluation_slices=int(evaluation_slices))
    names = list(plans["channel_names"])
    all_of_them = all_patterns(len(names))
    patterns = list(patterns) if patterns else all_of_them
    unknown = [p for p in patterns if p not in all_of_them]
    if unknown:
        raise InputError(f"patterns {unknown} are not valid for {len(names)} sequences")
    case_files = find_cases(dataset_name, fold, cases, len(names))
    imputers = build_methods(list(dict.fromkeys(methods)), plans, dataset_name, fold, configuration, device,
                             {"checkpoint": checkpoint, "batch_size": batch_size, "source_rule": source_rule,
                              "code_decoding": code_decoding},
                             codebrain=codebrain)
    out_dir = (Path(output_dir) if output_dir
               else evaluation_folder(dataset_name, fold, configuration, cases, trainer, source_rule))
    logger.info("evaluating %s on %d case(s) x %d pattern(s), protocols %s -> %s", ", ".join(imputers),
                len(case_files), len(patterns), ", ".join(protocols), out_dir)

    rows: dict[str, list[dict[str, Any]]] = {"paper": [], "volume": []}
    seconds = {method: 0.0 for method in imputers}
    figure_data, figure_case = {}, ""
    settings = {"methods": {name: imp.fingerprint() if hasattr(imp, "fingerprint") else name
                            for name, imp in imputers.items()},
                "protocols": protocols, "patterns": patterns, "configuration": config, "channels": names}
    for index, case in enumerate(tqdm(case_files, desc="evaluate imputation", unit="case")):
        keep = index < figure_cases
        key = _case_key(case, settings)
        result = None if keep else _cached_case(out_dir, case.case_id, key)
        if result is None:
            images, label = load_case(case)
            result = evaluate_case(case.case_id, images, label, plans, config, imputers, protocols, patterns, keep)
            _cache_case(out_dir, case.case_id, key, result)
        else:
            logger.info("%s: scores of an earlier run with the same cases, models and settings reused",
                        case.case_id)
        for protocol in PROTOCOLS:
            rows[protocol] += result[protocol]
        for method, value in result["seconds"].items():
            seconds[method] += value
        if keep and not figure_data:
            figure_data, figure_case = result["figures"], case.case_id

    all_rows = rows["paper"] + rows["volume"]
    summary = summarise(all_rows)
    _remove_stale_outputs(out_dir, protocols)
    for protocol in protocols:
        write_csv(out_dir / f"scores_{protocol}.csv", rows[protocol])
    write_csv(out_dir / "pairs.csv", pair_means(all_rows))
    write_csv(out_dir / "summary.csv", summary_rows(summary))
    tables = [f"# Imputation evaluation: {dataset_name}, fold {fold}, configuration {configuration}, "
              f"cases {cases}", "",
              f"{len(case_files)} case(s); cells are PSNR (dB) / SSIM (x100) / MAE (x1000); O->O = one given "
              "sequence, M->O = two or more; overall and variance over all (pattern, missing sequence) pairs, "
              "unweighted.", ""]
    for protocol in protocols:
        for region, summaries in summary.get(protocol, {}).items():
            tables.append(markdown_table(summaries, names, title=f"{protocol} protocol, {region}"))
    with atomic_path(out_dir / "tables.md") as temp:
        temp.write_text("\n".join(tables))
    written = write_figures(out_dir, figure_case, figure_data, summary, names) if figure_data else []
    write_json(out_dir / "summary.json", {
        "dataset": dataset_name, "fold": fold, "configuration": configuration, "cases": cases,
        "model_folder": model_folder_name(configuration, trainer=trainer),
        "variant": {**variant_options, "loss_weights": list(variant_options["loss_weights"])
                    if isinstance(variant_options["loss_weights"], (tuple, list)) else variant_options["loss_weights"],
                    "source_rule": source_rule},
        "case_ids": [case.case_id for case in case_files], "protocols": protocols, "patterns": patterns,
        "channel_names": names, "evaluation_slices": int(config["evaluation_slices"]),
        "methods": {name: {"intensity_scale": getattr(imputer, "intensity_scale", ""),
                           "seconds_per_case_and_pattern": seconds[name] / (len(case_files) * len(patterns)),
                           **({"model": imputer.predictor.model_info} if hasattr(imputer, "predictor") else {})}
                    for name, imputer in imputers.items()},
        "figures": [str(path.relative_to(out_dir)) for path in written],
        "summary": summary,
    })
    logger.info("imputation evaluation written to %s", out_dir)
    return out_dir
