"""Stage I reconstruction from oracle codes, scored like the imputation (the papers' "Rec." rows).

The papers' reconstruction figures (CVPR 2026 Tables 1 and 3, v1 Table 3 and Fig. 6; the reference's
``evaluate_rec`` of the CodeBrain reference implementation) decode the code of the *complete* stack
(the posterior encoder's, an upper bound of what Stage II can predict) with F_c of the masked stack. The cases,
preprocessing, middle slices, patterns, metrics and averaging are exactly those of the imputation harness's paper
protocol (``evaluation.imputation.evaluate``), so a "Rec." row and an "Imp." row of one table differ only in
where the code comes from. As there, the missing channels are zero outside the given sequences' brain.

The **F_c-reliance diagnostic** (``fc_input='zeros'``) decodes the same oracle codes with F_c computed from an
all-zero stack instead of the masked one: how much the trained decoder uses F_c (the gap to ``'masked'``). It is
scored into ``reconstruction_eval/<cases>-fc_zeros/`` (:func:`evaluation_tag`); :func:`fc_reliance` is its
in-memory form for one model and a few slices.

Besides the missing sequences (method ``oracle``, the papers' figure), the **given** sequences are scored too
(method ``oracle_given``: how well Stage I rebuilds what it was shown), so an arm that buys a better missing-sequence
score with worse given ones shows it. ``checkpoint='best'`` scores ``checkpoint_best.pth`` (picked on the fold's
validation cases, so optimistic on ``cases='val'``, equally for every arm) into ``<cases>-best/``.

Outputs, in ``<model>/fold_F/reconstruction_eval/<cases>/``: ``scores_paper.csv`` (one row per slice),
``pairs.csv``, ``summary.csv``, ``summary.json`` (same layout as the imputation harness's, methods ``oracle`` and
``oracle_given``) and ``tables.md``.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from codebrain_seg import paths
from codebrain_seg.errors import InputError, MissingFileError
from codebrain_seg.io import atomic_path, write_json
from codebrain_seg.metrics import slice_metrics
from codebrain_seg.networks import StageOneModel
from codebrain_seg.results_layout import cases_tag
from evaluation.imputation.aggregate import (
    all_patterns,
    markdown_table,
    pair_means,
    parse_pattern,
    summarise,
    summary_rows,
    write_csv,
)
from evaluation.imputation.evaluate import find_cases, load_case
from planners.experiment_planner import get_configuration
from planners.plan_and_preprocess import load_plans
from planners.slice_preprocessing import middle_slices, prepare_case
from trainers.stage2 import load_stage_one as load_generator

logger = logging.getLogger(__name__)

METHOD = "oracle"
GIVEN_METHOD = "oracle_given"  # the same decoding scored on the given sequences
CHECKPOINTS = ("final", "best")
DEFAULT_BATCH = 8
FC_INPUTS = ("masked", "zeros")


def check_fc_input(fc_input: str) -> str:
    """``fc_input`` if it is ``'masked'`` (the papers' Rec.) or ``'zeros'`` (the diagnostic); InputError otherwise."""
    if fc_input not in FC_INPUTS:
        raise InputError(f"fc_input must be one of {FC_INPUTS}, got {fc_input!r}")
    return fc_input


def check_checkpoint(checkpoint: str) -> str:
    """``checkpoint`` if it is ``'final'`` or ``'best'``; InputError otherwise."""
    if checkpoint not in CHECKPOINTS:
        raise InputError(f"checkpoint must be one of {CHECKPOINTS}, got {checkpoint!r}")
    return checkpoint


def evaluation_tag(cases: str, fc_input: str = "masked", checkpoint: str = "final") -> str:
    """Folder name of a reconstruction evaluation: ``val``, ``test`` or the cases folder's name, plus ``-fc_zeros``
    for the F_c-reliance diagnostic and ``-best`` for the best checkpoint."""
    tag = cases_tag(cases)
    tag += "-fc_zeros" if check_fc_input(fc_input) == "zeros" else ""
    return tag + ("-best" if check_checkpoint(checkpoint) == "best" else "")


def load_stage_one(stage1_dir: Path, device: str = "cpu", checkpoint: str = "final"
                   ) -> tuple[StageOneModel, dict[str, Any]]:
    """The Stage I generator of ``stage1_dir/checkpoint_<checkpoint>.pth`` (eval mode) and its provenance.

    Raises:
        FileNotFoundError: the stage is not finished (or, for ``best``, never validated).
        ValueError: the file is not a CodeBrain Stage I checkpoint.
    """
    path = Path(stage1_dir) / f"checkpoint_{check_checkpoint(checkpoint)}.pth"
    if not path.is_file():
        raise MissingFileError(f"no {checkpoint} Stage I checkpoint in {stage1_dir} ({path.name} is missing): train "
                               "it with codebrain_train --stage 1" + (" (the best one is written at validations)"
                                                                      if checkpoint == "best" else ""))
    model, state = load_generator(path, torch.device(device))
    info = {"checkpoint": str(path), "stage1_iteration": state.get("iteration"),
            "training_precision": state.get("precision"),
            "configuration": state.get("configuration_name"), "network_config": state["network_config"]}
    return model, info


@torch.no_grad()
def reconstruct(model: StageOneModel, full: np.ndarray, available: Sequence[bool],
                batch_size: int = DEFAULT_BATCH, fc_input: str = "masked") -> np.ndarray:
    """Decode the oracle codes of complete slices with F_c of the masked slices (or of zeros).

    Args:
        model: a Stage I generator.
        full: ``(C, S, H, W)`` normalised complete slices in [0, 1].
        available: C booleans (1 = given).
        batch_size: slices per forward pass.
        fc_input: ``'masked'`` (the papers' Rec.) or ``'zeros'``: E_c reads an all-zero stack (the F_c-reliance
            diagnostic; a model without F_c, or the blank-F_c control, decodes the same either way).

    Returns:
        ``(C, S, H, W)`` reconstruction clamped to [0, 1], zero where no given channel is non-zero.
    """
    blank = check_fc_input(fc_input) == "zeros"
    available = np.asarray(available, dtype=bool)
    device = next(model.parameters()).device
    mask = torch.as_tensor(available, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    output = np.zeros_like(full, dtype=np.float32)
    for start in range(0, full.shape[1], batch_size):
        x = torch.as_tensor(np.ascontiguousarray(full[:, start:start + batch_size].transpose(1, 0, 2, 3)),
                            dtype=torch.float32, device=device)
        # The imputation's own decoding path (v1: F_c of a source modality drawn among the given ones), with a
        # fixed random stream so that a rerun scores the same sources.
        masked = torch.zeros_like(x) if blank else x * mask  # 'available' is passed, so v1 still picks sources
        decoded = model.impute_from_codes(model.encode_codes(x), masked,
                                          available=torch.as_tensor(available, device=device),
                                          generator=torch.Generator().manual_seed(start))
        decoded = decoded.float().clamp(0, 1)
        output[:, start:start + len(x)] = decoded.cpu().numpy().transpose(1, 0, 2, 3)
    output *= (full[available] != 0).any(axis=0)[None]  # as the imputer's impute_normalised
    return output


def fc_reliance(model: StageOneModel, full: np.ndarray, patterns: Sequence[str] | None = None,
                batch_size: int = DEFAULT_BATCH) -> dict[str, float]:
    """How much a trained decoder uses F_c: oracle-code reconstruction PSNR with F_c of the masked stack vs of zeros.

    Args:
        model: a Stage I generator (eval mode).
        full: ``(C, S, H, W)`` normalised complete slices in [0, 1].
        patterns: availability patterns (default all ``2^C - 2``).
        batch_size: slices per forward pass.

    Returns:
        ``{"masked": PSNR, "zeros": PSNR, "gap_db": masked - zeros}``: unweighted means over (pattern, missing
        sequence) pairs of the per-slice PSNR (dB), as the paper protocol averages; a gap near 0 = F_c unused.
    """
    patterns = list(patterns) if patterns else all_patterns(full.shape[0])
    means: dict[str, float] = {}
    for fc_input in FC_INPUTS:
        pairs = []
        for pattern in patterns:
            available = np.array(parse_pattern(pattern))
            output = reconstruct(model, full, available, batch_size, fc_input)
            pairs += [float(np.mean(slice_metrics(output[c], full[c])["psnr"])) for c in np.flatnonzero(~available)]
        means[fc_input] = float(np.mean(pairs))
    return {**means, "gap_db": means["masked"] - means["zeros"]}


def evaluate_reconstruction(dataset: str | int, fold: int, configuration: str, stage1_dir: Path,
                            output_dir: Path, cases: str = "val", device: str = "cpu",
                            batch_size: int | None = None, evaluation_slices: int | None = None,
                            patterns: Sequence[str] | None = None, fc_input: str = "masked",
                            checkpoint: str = "final") -> Path:
    """Score the oracle-code reconstruction of a Stage I model on every pattern; writes the outputs (module
    docstring) to ``output_dir`` and returns it.

    Args:
        dataset: dataset id or name (plans and cases as for the imputation harness).
        fold: fold whose validation cases ``cases='val'`` means.
        configuration: plans configuration (crop, slices scored).
        stage1_dir: folder with the Stage I ``checkpoint_final.pth``.
        output_dir: where to write.
        cases: ``val``, ``test`` or a folder (``evaluation.imputation.evaluate.find_cases``).
        device: torch device.
        batch_size: slices per forward pass (default 8).
        evaluation_slices: middle slices per case (default: the configuration's).
        patterns: subset of the ``2^C - 2`` patterns (default all).
        fc_input: ``'masked'`` (default) or ``'zeros'`` (the F_c-reliance diagnostic, module docstring); recorded
            in ``summary.json`` as ``fc_input`` when not the default.
        checkpoint: ``'final'`` (default) or ``'best'``; recorded as ``checkpoint`` when not the default.
    """
    check_fc_input(fc_input)
    dataset_name = paths.resolve_dataset(dataset)
    plans = load_plans(paths.preprocessed_root() / dataset_name)
    config = get_configuration(plans, configuration)
    count = int(evaluation_slices if evaluation_slices is not None else config["evaluation_slices"])
    if count < 1:
        raise InputError(f"evaluation_slices must be >= 1, got {evaluation_slices}")
    names = list(plans["channel_names"])
    patterns = list(patterns) if patterns else all_patterns(len(names))
    model, info = load_stage_one(stage1_dir, device, checkpoint)
    if model.config.in_channels != len(names):
        raise InputError(f"{stage1_dir} was trained on {model.config.in_channels} sequences, the dataset has "
                         f"{len(names)}")
    case_files = find_cases(dataset_name, fold, cases, len(names))
    logger.info("oracle reconstruction of %s on %d case(s) x %d pattern(s)", stage1_dir, len(case_files),
                len(patterns))
    rows: list[dict[str, Any]] = []
    for case in case_files:
        images, _ = load_case(case)
        stack, _, _ = prepare_case(images, np.ones(len(names), dtype=bool), np.eye(4), plans, config)
        scored = middle_slices(stack.shape[1], count)
        full = stack[:, scored]
        for pattern in patterns:
            available = np.array(parse_pattern(pattern))
            output = reconstruct(model, full, available, int(batch_size or DEFAULT_BATCH), fc_input)
            for channel in range(len(names)):  # the missing ones (the papers' figure), then the given ones
                scores = slice_metrics(output[channel], full[channel])
                method = GIVEN_METHOD if available[channel] else METHOD
                for position, slice_index in enumerate(scored):
                    rows.append({"method": method, "case": case.case_id, "pattern": pattern, "protocol": "paper",
                                 "region": "image", "missing": names[channel], "slice": int(slice_index),
                                 **{k: float(v[position]) for k, v in scores.items()}})
    summary = summarise(rows)
    output_dir = Path(output_dir)
    write_csv(output_dir / "scores_paper.csv", rows)
    write_csv(output_dir / "pairs.csv", pair_means(rows))
    write_csv(output_dir / "summary.csv", summary_rows(summary))
    title = (f"# Stage I reconstruction from oracle codes: {dataset_name}, fold {fold}, configuration "
             f"{configuration}, cases {cases}\n\n{len(case_files)} case(s); cells are PSNR (dB) / SSIM (x100) / "
             "MAE (x1000)." + (" F_c computed from zeros (the F_c-reliance diagnostic)." if fc_input == "zeros"
                               else "") + "\n")
    with atomic_path(output_dir / "tables.md") as temp:
        temp.write_text(title + "\n" + markdown_table(summary["paper"]["image"], names, title="paper protocol"))
    write_json(output_dir / "summary.json", {
        "dataset": dataset_name, "fold": fold, "configuration": configuration, "cases": cases,
        "case_ids": [case.case_id for case in case_files], "protocols": ["paper"], "patterns": patterns,
        "channel_names": names, "evaluation_slices": count, "methods": {METHOD: {"model": info}},
        "summary": summary, **({"fc_input": fc_input} if fc_input != "masked" else {}),
        **({"checkpoint": checkpoint} if checkpoint != "final" else {}),
    })
    return output_dir
