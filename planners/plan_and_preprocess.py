"""The ``codebrain_plan_and_preprocess`` stage: fingerprint -> plans -> splits -> preprocessed arrays."""
from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

from codebrain_seg import paths
from codebrain_seg.case_checks import CaseFiles, CaseProblemsError, check_cases
from codebrain_seg.errors import InputError, MissingFileError
from codebrain_seg.io import read_json, write_json
from codebrain_seg.plans import PLANS_NAME, check_plans
from codebrain_seg.raw_dataset import (
    channel_names,
    image_path,
    label_path,
    label_values,
    list_cases,
    load_dataset_json,
    subject_of_cases,
)
from planners.copedit_planner import add_copedit_configurations
from planners.experiment_planner import get_configuration, plan_experiment
from planners.fingerprint import changed_inputs, extract_fingerprint, input_stamps
from planners.preprocessing import preprocess_dataset

logger = logging.getLogger(__name__)

NUM_FOLDS = 5
SPLIT_SEED = 12345


def make_splits(case_ids: Sequence[str], num_folds: int = NUM_FOLDS, seed: int = SPLIT_SEED,
                subjects: Mapping[str, str] | None = None) -> list[dict[str, list[str]]]:
    """Deterministic k-fold train/val splits (nnU-Net's own split function and seed).

    With ``subjects`` (case id -> subject id, e.g. a cine's ED and ES frames -> one patient) the folds are drawn
    over the subjects and every case goes where its subject goes; without it (or when every case is its own
    subject) the splits are exactly nnU-Net's over the cases.
    """
    # lazy: nnunetv2 is heavy to import and needed only here
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    if len(case_ids) < 2:
        raise InputError(f"at least 2 cases are needed to make train/validation splits, got {len(case_ids)}")
    if subjects is None or len({subjects.get(case, case) for case in case_ids}) == len(case_ids):
        return generate_crossval_split(sorted(case_ids), seed=seed, n_splits=min(num_folds, len(case_ids)))
    members: dict[str, list[str]] = {}
    for case in sorted(case_ids):
        members.setdefault(subjects.get(case, case), []).append(case)
    if len(members) < 2:
        raise InputError(f"at least 2 subjects are needed to make train/validation splits, got {len(members)}")
    folds = generate_crossval_split(sorted(members), seed=seed, n_splits=min(num_folds, len(members)))
    return [{part: sorted(case for subject in fold[part] for case in members[subject]) for part in ("train", "val")}
            for fold in folds]


def load_plans(preprocessed_dir: Path) -> dict[str, Any]:
    """Read the plans of a preprocessed dataset, with a hint when they are missing."""
    path = preprocessed_dir / f"{PLANS_NAME}.json"
    if not path.is_file():
        raise MissingFileError(f"{path} does not exist: run codebrain_plan_and_preprocess -d "
                                f"{preprocessed_dir.name} first")
    plans = read_json(path)
    check_plans(plans, str(path))  # a hand edit or a NaN is named here, not deep inside training
    return plans


def load_split(preprocessed_dir: Path, fold: int | str) -> dict[str, list[str]]:
    """``{"train": [...], "val": [...]}`` of one fold of ``splits_final.json``, with a hint when it is missing."""
    splits_path = preprocessed_dir / "splits_final.json"
    if not splits_path.is_file():
        raise MissingFileError(f"{splits_path} does not exist: run codebrain_plan_and_preprocess -d "
                               f"{preprocessed_dir.name}")
    splits = read_json(splits_path)
    if isinstance(fold, bool) or not str(fold).lstrip("-").isdigit() or not 0 <= int(fold) < len(splits):
        raise InputError(f"fold {fold!r} does not exist: {splits_path} has folds 0..{len(splits) - 1}")
    return splits[int(fold)]


def verify_dataset(raw_dir: Path, dataset_json: dict[str, Any]) -> None:
    """Check every raw case (readable, same grid, finite, non-zero, known labels); raise listing all problems."""
    names = channel_names(dataset_json)
    cases = []
    for case_id in list_cases(raw_dir):
        images = {f"{name} ({image_path(raw_dir, case_id, index).name})": image_path(raw_dir, case_id, index)
                  for index, name in enumerate(names)}
        label = label_path(raw_dir, case_id)
        cases.append(CaseFiles(case_id, images, label if label.is_file() else None))
    problems = check_cases(cases, allowed_labels=label_values(dataset_json))
    if problems:
        raise CaseProblemsError(problems, len(cases), "Nothing was planned or preprocessed.")


def check_plans_values(fingerprint: dict[str, Any], path: Path) -> None:
    """Refuse a fingerprint with a non-finite dataset summary before it is written (names the sequence)."""
    for name, summary in fingerprint.get("intensity_summary", {}).items():
        for key, value in summary.items():
            if not math.isfinite(value):
                raise InputError(f"{path.name} would hold {key} {value} for {name}: a case has NaN or infinite "
                                 f"voxels; run with the integrity check (the default) to find it, fix it and rerun")


def plan_and_preprocess(dataset: str | int, configurations: Sequence[str] | None = None,
                        gpu_memory_gb: float = 24.0, num_processes: int = 1, verify: bool = True,
                        replan: bool = False) -> Path:
    """Run the whole stage for one dataset; returns the preprocessed dataset folder.

    ``verify`` (default) checks every raw case first (:func:`verify_dataset`). The fingerprint records the size
    and modification time of every raw file: when a file changed since (a fixed or replaced case), the
    fingerprint, the plans and the arrays are made again. Plans are checked before they are written: a
    non-finite value never reaches them.
    """
    if isinstance(gpu_memory_gb, bool) or not isinstance(gpu_memory_gb, (int, float)) or not gpu_memory_gb > 0:
        raise InputError(f"--gpu-memory-gb must be a positive number of GB, got {gpu_memory_gb!r}")
    if isinstance(num_processes, bool) or not isinstance(num_processes, int) or num_processes < 1:
        raise InputError(f"-np / --num-processes must be 1 or more, got {num_processes!r}")
    raw_dir = paths.raw_dataset_dir(dataset)
    dataset_json = load_dataset_json(raw_dir)
    if verify:
        verify_dataset(raw_dir, dataset_json)
    out_dir = paths.preprocessed_root() / raw_dir.name
    out_dir.mkdir(parents=True, exist_ok=True)
    cases = list_cases(raw_dir)

    fingerprint_path = out_dir / "dataset_fingerprint.json"
    fingerprint = read_json(fingerprint_path) if fingerprint_path.is_file() and not replan else None
    stamps = input_stamps(raw_dir, cases, len(channel_names(dataset_json)))
    changed = changed_inputs(fingerprint, stamps) if fingerprint is not None else []
    if changed:
        logger.warning("raw files changed since the fingerprint (%s%s): fingerprint, plans and arrays are made again",
                       ", ".join(changed[:5]), " ..." if len(changed) > 5 else "")
    if fingerprint is None or [c["case_id"] for c in fingerprint["cases"]] != cases or changed:
        fingerprint = extract_fingerprint(raw_dir, dataset_json, num_processes)
        fingerprint["input_stamps"] = stamps
        check_plans_values(fingerprint, fingerprint_path)
        write_json(fingerprint_path, fingerprint)
        replan = True

    plans_path = out_dir / f"{PLANS_NAME}.json"
    if not replan and plans_path.is_file():
        try:
            check_plans(read_json(plans_path), str(plans_path))
        except InputError as error:
            logger.warning("%s; writing the plans again", error)
            replan = True
    if replan or not plans_path.is_file():
        plans = plan_experiment(fingerprint, raw_dir.name, gpu_memory_gb=gpu_memory_gb)
        check_plans(plans, str(plans_path))  # before writing: a NaN never reaches the plans
        write_json(plans_path, plans)
        for configuration in plans["configurations"].values():
            # Stale arrays from an earlier plan would silently mix two preprocessings.
            shutil.rmtree(out_dir / configuration["data_identifier"], ignore_errors=True)
    else:
        plans = read_json(plans_path)

        if add_copedit_configurations(plans, fingerprint, gpu_memory_gb):
            # plans made before CoPeDiT existed: its configurations are added, nothing else changes
            write_json(plans_path, plans)
    write_json(out_dir / "dataset.json", dataset_json)
    splits_path = out_dir / "splits_final.json"
    if not splits_path.is_file():
        write_json(splits_path, make_splits(cases, subjects=subject_of_cases(dataset_json, cases)))

    # Configurations marked default_preprocessing False (CoPeDiT's 3D volumes) are preprocessed only when named.
    names = list(configurations) if configurations else [
        name for name, config in plans["configurations"].items() if config.get("default_preprocessing", True)]
    for name in names:
        get_configuration(plans, name)  # unknown names fail before any work
    done_identifiers: set[str] = set()
    for name in names:
        identifier = plans["configurations"][name]["data_identifier"]
        if identifier in done_identifiers:
            continue  # configurations sharing a preprocessing share its arrays
        preprocess_dataset(raw_dir, out_dir, plans, name, num_processes)
        done_identifiers.add(identifier)
    return out_dir


def add_configuration(preprocessed_dir: Path, name: str, base: str, reason: str, **changes: Any) -> dict[str, Any]:
    """Add (or replace) a configuration derived from ``base`` in the plans; it shares base's preprocessed arrays."""
    plans = load_plans(preprocessed_dir)
    configuration = {**get_configuration(plans, base), **changes}
    configuration["reasons"] = {**configuration.get("reasons", {}), "derived": f"from {base}: {reason}"}
    plans["configurations"][name] = configuration
    write_json(preprocessed_dir / f"{PLANS_NAME}.json", plans)
    return plans
