"""``impute_folder``, the API of ``codebrain_impute``: NIfTI cases with any subset of sequences in, the missing
sequences out.

Input folder in nnU-Net naming: ``CASE_0000.nii.gz``, ``CASE_0001.nii.gz`` ... in the dataset's channel order. A
sequence is missing when its file is absent or all zero. For each case, only the missing sequences are written to
the output folder (``CASE_XXXX.nii.gz``, float32, the input's affine and header), with a JSON sidecar
``CASE_imputation.json`` (what was imputed from what, by which model, in which intensity scale) and, with
``--save-confidence``, ``confidence/CASE.nii.gz`` (a subfolder, so the output stays a valid nnU-Net input
folder). Given sequences are never written.

Every case is checked before anything is written: an unreadable file, a channel the model does not know, sequences
on different grids or a case with every sequence missing stop the run with one message listing all problems.
Under ``torchrun`` (``WORLD_SIZE`` > 1) rank r imputes cases r, r + WORLD_SIZE, ... of the sorted list.

A **missing-slice (cardiac) dataset** takes the other path, :func:`codebrain_seg.run.slice_imputation.
impute_slices_folder`: short-axis stacks ``CASE_0000.nii.gz`` in, the completed stacks out (all-zero slices, or
``--missing-slices 3,4,5``, filled), each with a ``CASE_imputation.json`` naming the filled slices.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from codebrain_seg import paths
from codebrain_seg.case_checks import check_case as check_case_files
from codebrain_seg.errors import InputError, MissingFileError
from codebrain_seg.geometry import from_canonical, to_canonical
from codebrain_seg.inference.confidence import CONFIDENCE_DEFINITION
from codebrain_seg.inference.model_folders import (
    default_configuration,
    load_predictor_plans,
    model_folder_prefix,
    model_plans,
    resolve_model_folder,
)
from codebrain_seg.inference.request import ImputationContext
from codebrain_seg.io import read_nifti, read_side_by_side, write_json, write_nifti
from codebrain_seg.plans import Plans
from codebrain_seg.results_layout import METHOD_FOLDERS
from codebrain_seg.run.methods import get_method
from codebrain_seg.run.slice_imputation import impute_slices_folder, slice_dataset_plans
from codebrain_seg.variants import CodeBrainVariant
from planners.experiment_planner import get_configuration

logger = logging.getLogger(__name__)

# The methods whose predictor is slice-wise (codebrain_seg.inference.slice_predictor): they can mirror.
MIRRORED_METHODS = ("codebrain", "regression")
FILE_PATTERN = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})\.nii\.gz$")


@dataclass
class InputCase:
    """One case of the input folder: file per known channel (absent ones None) and which are given."""

    case_id: str
    files: list[Path | None]
    available: list[bool] = field(default_factory=list)
    zero_files: list[int] = field(default_factory=list)  # channels present as an all-zero volume


def scan_input_folder(folder: Path, channel_names: Sequence[str]) -> tuple[list[InputCase], list[str]]:
    """Group ``CASE_XXXX.nii.gz`` files by case; returns the cases and the problems found by name alone."""
    if not folder.is_dir():
        raise MissingFileError(f"input folder {folder} does not exist")
    grouped: dict[str, dict[int, Path]] = {}
    problems = []
    for path in sorted(folder.iterdir()):
        match = FILE_PATTERN.match(path.name)
        if not match:
            if path.name.endswith((".nii.gz", ".nii")):
                logger.warning("%s ignored: not named CASE_XXXX.nii.gz", path.name)
            continue
        channel = int(match.group("channel"))
        if channel >= len(channel_names):
            known = ", ".join(f"{i:04d} {name}" for i, name in enumerate(channel_names))
            problems.append(f"{path.name}: channel {channel:04d} is not known by the model (channels {known})")
            continue
        grouped.setdefault(match.group("case"), {})[channel] = path
    cases = [InputCase(case_id, [files.get(c) for c in range(len(channel_names))])
             for case_id, files in sorted(grouped.items())]
    if not cases and not problems:
        raise MissingFileError(f"{folder} holds no CASE_XXXX.nii.gz file")
    return cases, problems


def check_case(case: InputCase, channel_names: Sequence[str], loaded: dict[str, Any] | None = None) -> list[str]:
    """Fill ``case.available`` (a present, all-zero file is a missing sequence); returns the case's problems
    (``codebrain_seg.case_checks.check_case``: unreadable, not 3D, different grids, NaN/inf; or nothing given).
    ``loaded``: a dict that receives the volumes read, by file name."""
    present = {f"{path.name}": path for path in case.files if path is not None}
    blank: list[str] = []
    problems = check_case_files(case.case_id, present, None, blank=blank, loaded=loaded)
    case.available = [path is not None and path.name not in blank for path in case.files]
    case.zero_files = [channel for channel, path in enumerate(case.files) if path is not None and path.name in blank]
    unreadable = {problem.split(":", 1)[0] for problem in problems}
    case.available = [flag and case.files[c].name not in unreadable  # type: ignore[union-attr]
                      for c, flag in enumerate(case.available)]
    if not any(case.available) and not problems:
        problems.append(f"case {case.case_id}: every sequence is missing (absent or all zero); at least one of "
                        f"{', '.join(channel_names)} must be given")
    return [f"case {case.case_id}: {problem}" for problem in problems]


def check_writable(folder: Path) -> None:
    """Make ``folder`` and write a probe file in it, before any compute; InputError naming it when it cannot."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".write-test-", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise InputError(f"output folder {folder} cannot be written ({error.strerror or error}): choose a folder "
                         f"you may write to (-o); nothing was computed") from error


def _method_of_folder(prefix: str, model_dir: Path) -> str:
    """The registry method a model folder prefix (``CodeBrain-v1``, ``CoPeDiT-mask``, ``Regression``) belongs to."""
    base = prefix.split("-")[0]
    for name, folder in METHOD_FOLDERS.items():
        if folder == base:
            return name
    raise InputError(f"{model_dir.parent} is not a model folder of a known method (its name starts with {prefix!r}; "
                     f"known: {', '.join(METHOD_FOLDERS.values())})")


def _resume_key(case: InputCase, given: list[int], method: str, model_info: dict[str, Any],
                model_key: dict[str, Any], save_confidence: bool, options: tuple[Any, ...]) -> str:
    """What a case's imputation depends on (given files' size and mtime, model and its checkpoints, options), as
    text: a rerun keeps a case whose sidecar (written last) holds the same key."""
    files = {case.files[c].name: [case.files[c].stat().st_size, case.files[c].stat().st_mtime_ns]  # type: ignore
             for c in given}
    payload = {"method": method, "model": model_info, "checkpoints": model_key, "given": files,
               "confidence": save_confidence, "options": list(options)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _already_imputed(output_folder: Path, case: InputCase, missing: list[int], resume_key: str,
                     save_confidence: bool) -> bool:
    sidecar = output_folder / f"{case.case_id}_imputation.json"
    if not sidecar.is_file():
        return False
    try:
        recorded = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return False  # a damaged sidecar: impute again
    targets = [output_folder / f"{case.case_id}_{c:04d}.nii.gz" for c in missing]
    if save_confidence:
        targets.append(output_folder / "confidence" / f"{case.case_id}.nii.gz")
    return (isinstance(recorded, dict) and recorded.get("resume_key") == resume_key
            and all(path.is_file() for path in targets))


def _rank_share(cases: list[InputCase]) -> list[InputCase]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))
    if world > 1:
        logger.info("rank %d of %d: %d of %d case(s)", rank, world, len(cases[rank::world]), len(cases))
        return cases[rank::world]
    return cases


def impute_folder(dataset: str | int | None, fold: int | str | None, input_folder: str | Path,
                  output_folder: str | Path, configuration: str | None = None, method: str | None = None,
                  device: str = "cpu",
                  batch_size: int | None = None, save_confidence: bool = False,
                  checkpoint: str = "final", *, ablation: str = "none",
                  loss_weights: Sequence[float] | str | None = None, variant: str = "cvpr",
                  code_dim: int | None = None, source_rule: str = "random", prompts: str = "learned",
                  layout: str = "shared", model_folder: str | Path | None = None,
                  missing_slices: str | Sequence[int] | None = None, mirroring: bool = False,
                  code_decoding: str = "expected") -> list[Path]:
    """Impute the missing sequences of every case of ``input_folder`` (module docstring); returns files written.

    Args:
        dataset: dataset id or name the model was trained on (its channel order and plans); not needed with
            ``model_folder``.
        fold: the model's fold (default 0, or the fold of a ``fold_F`` ``model_folder``).
        input_folder: ``CASE_XXXX.nii.gz`` files.
        output_folder: where the imputed sequences, sidecars and confidence maps go (may be the input folder).
        configuration: plans configuration of the model (default: see
            :func:`codebrain_seg.inference.model_folders.default_configuration`).
        method: a method of the imputation registry: ``codebrain`` (default), ``copedit``, ``regression`` or a
            baseline (``mean``, ``zero``); with ``model_folder``, default: the folder's method.
        device: torch device for CodeBrain.
        batch_size: slices per forward pass (default: the configuration's Stage II batch).
        save_confidence: also write ``confidence/CASE.nii.gz`` (CodeBrain only).
        checkpoint: ``final``, ``best`` or ``latest``.
        ablation, loss_weights, variant, code_dim: the CodeBrain variant to load, as given to ``codebrain_train``
            (its results folder ``CodeBrain[-v1][-dD][-ablation][-lmM-laA]__...``).
        source_rule: v1 models: ``random`` (default) or ``relevant`` source of the common features.
        prompts, layout: copedit models: ``learned`` (default) or ``mask`` prompts, ``shared`` (default) or
            ``per_count`` MDiT3D layout, as given to ``codebrain_train`` (they select the model folder).
        model_folder: predict from this folder alone (``<Method>__<plans>__<configuration>`` or its ``fold_F``,
            e.g. one installed by ``codebrain_install_model``): its plans.json and checkpoints, no raw or
            preprocessed dataset; the variant options are then ignored.
        missing_slices: a missing-slice (cardiac) dataset only: ``'3,4,5'``, the 0-based slices missing in every
            case (default: the all-zero slices); see :func:`codebrain_seg.run.slice_imputation.impute_slices_folder`.
        mirroring: slice-wise learned methods (codebrain, regression): the mean over the in-plane flips, about
            four times the seconds (:mod:`codebrain_seg.inference.slice_predictor`).
        code_decoding: codebrain: ``expected`` (default) or the reference's ``count`` decode of Stage II's levels.
    """
    if slice_dataset_plans(dataset, model_folder, fold) is not None:
        if save_confidence or mirroring or code_decoding != "expected":
            raise InputError("--save-confidence, --mirror and --code-decoding belong to CodeBrain's slice-wise "
                             "sequence imputation; a missing-slice dataset has none of them")
        return impute_slices_folder(dataset, fold, input_folder, output_folder, configuration, method, device,
                                    missing_slices, checkpoint, prompts, model_folder)
    if missing_slices is not None:
        raise InputError("--missing-slices applies to a missing-slice (cardiac) dataset of codebrain_convert_cardiac; "
                         "this model imputes missing sequences (absent or all-zero files)")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise InputError(f"--batch-size must be a positive integer, got {batch_size!r} (leave it out for the "
                         f"configuration's Stage II batch size)")
    codebrain = CodeBrainVariant(ablation, loss_weights, variant, code_dim)  # type: ignore[arg-type]
    method_options = {"prompts": prompts, "layout": layout}
    model_dir = None
    if model_folder is not None:
        model_dir, dataset_name, folder_configuration, folder_prefix = resolve_model_folder(
            model_folder, None if fold is None else fold)
        fold = model_dir.name[len("fold_"):]
        fold = int(fold) if fold.isdigit() else fold
        folder_method = _method_of_folder(folder_prefix, model_dir)
        if method is not None and method != folder_method and get_method(method).trainable:
            raise InputError(f"--method {method} does not match the model folder {model_dir.parent.name} (a "
                             f"{folder_method} model): leave --method out or give {folder_method}")
        method = method or folder_method
        if configuration is not None and configuration != folder_configuration:
            raise InputError(f"-c {configuration} does not match the model folder {model_dir.parent.name} "
                             f"(configuration {folder_configuration}): leave -c out")
        configuration = folder_configuration
        plans = model_plans(model_dir)
    method = method or "codebrain"
    spec = get_method(method)
    if mirroring and method not in MIRRORED_METHODS:
        raise InputError(f"--mirror applies to the slice-wise learned methods ({', '.join(MIRRORED_METHODS)}), "
                         f"not {method!r}")
    if code_decoding != "expected" and method != "codebrain":
        raise InputError(f"--code-decoding applies to codebrain's Stage II, not {method!r}")
    if save_confidence and method != "codebrain":
        raise InputError(f"--save-confidence needs the codebrain method (confidence comes from Stage II), "
                         f"not {method!r}")
    if model_dir is None:
        if dataset is None:
            raise InputError("give the model: -d DATASET (with -f and -c) or -m MODEL_FOLDER")
        fold = 0 if fold is None else fold
        dataset_name = paths.resolve_dataset(dataset)
        # Without the plans' loss weights at hand yet, the configuration is looked up by the other tags first.
        prefix = model_folder_prefix(replace(codebrain, loss_weights=None))
        if configuration is None:  # a method with a configuration of its own (CoPeDiT) says which
            configuration = spec.configuration_for(dataset_name, fold, device, method_options)
        configuration = configuration or default_configuration(dataset_name, fold, device, prefix)
        if loss_weights is not None:
            prefix = model_folder_prefix(codebrain, dataset_name, configuration)
        plans = load_predictor_plans(dataset_name, fold, configuration, method, prefix)
    get_configuration(plans, configuration)
    names = Plans(plans).channel_names
    input_folder, output_folder = Path(input_folder), Path(output_folder)

    cases, problems = scan_input_folder(input_folder, names)
    # The checks read every file; the first case's volumes are kept for its imputation (a one-case folder, the
    # common use, is then read once), the others are read again when their turn comes, to bound the memory.
    first_case: dict[str, Any] = {}
    for index, case in enumerate(cases):
        problems += check_case(case, names, first_case if index == 0 else None)
    if problems:
        raise InputError(f"{len(problems)} problem(s) in {input_folder}, nothing was written:\n  "
                         + "\n  ".join(problems))
    if device == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0')) % max(torch.cuda.device_count(), 1)}"
    # The model is loaded (and a missing Stage II reported) before anything is written.
    context = ImputationContext(plans=plans, dataset=dataset_name, fold=fold, configuration=configuration,
                                device=device, options={"checkpoint": checkpoint, "batch_size": batch_size,
                                                        "source_rule": source_rule, "mirroring": mirroring,
                                                        "code_decoding": code_decoding, **method_options},
                                codebrain=codebrain, model_dir=model_dir)
    imputer = spec.build_imputer(context)
    check_writable(output_folder)  # before minutes of computing, not at the first write
    predictor = getattr(imputer, "predictor", None)
    model_info = dict(predictor.model_info) if predictor is not None else {"method": method}
    reference_upper = {name: Plans(plans).reference_upper(name) for name in names}

    model_key = imputer.fingerprint() if hasattr(imputer, "fingerprint") else {}
    written: list[Path] = []
    for case in _rank_share(cases):
        missing = [c for c, flag in enumerate(case.available) if not flag]
        if not missing:
            logger.info("%s: every sequence is given, nothing to impute", case.case_id)
            continue
        given = [c for c, flag in enumerate(case.available) if flag]
        resume_key = _resume_key(case, given, method, model_info, model_key, save_confidence, options=(
            checkpoint, source_rule, prompts, layout, batch_size))
        for leftover in [*output_folder.glob(f".{case.case_id}_*.tmp*"),
                         *output_folder.glob(f"confidence/.{case.case_id}.*.tmp*")]:
            leftover.unlink()  # a write cut short by a kill; the file it was replacing (if any) is intact
        if _already_imputed(output_folder, case, missing, resume_key, save_confidence):
            logger.info("%s: already imputed by this model in %s (an earlier run), kept", case.case_id,
                        output_folder)
            continue
        kept = first_case if case is cases[0] else {}
        volumes = read_side_by_side(lambda path: kept.pop(path.name, None) or read_nifti(path),
                                    [case.files[c] for c in given])
        reference = volumes[0]
        images = np.zeros((len(names),) + reference.data.shape, np.float32)
        for channel, volume in zip(given, volumes):
            images[channel] = volume.data
        del volumes
        canonical = to_canonical(images, reference.affine)
        available = np.array(case.available)
        confidence = None
        if save_confidence:
            output, confidence = predictor.impute_with_confidence(canonical, available)
        else:
            output = imputer.impute(canonical, available)
        output = from_canonical(output[missing], reference.affine)  # the given sequences are not written
        for index, channel in enumerate(missing):
            target = output_folder / f"{case.case_id}_{channel:04d}.nii.gz"
            write_nifti(target, output[index].astype(np.float32), reference.affine, reference.header)
            written.append(target)
        sidecar: dict[str, Any] = {
            "case": case.case_id,
            "method": method,
            "given": {names[c]: case.files[c].name for c in given},
            "imputed": {names[c]: f"{case.case_id}_{c:04d}.nii.gz" for c in missing},
            "missing_because": {names[c]: "all-zero volume" if c in case.zero_files else "absent file"
                                for c in missing},
            "imputed_from": [names[c] for c in given],
            "model": {"dataset": dataset_name, "fold": fold, "configuration": configuration, **model_info},
            "intensity_scale": getattr(imputer, "intensity_scale", ""),
            "reference_upper": {names[c]: reference_upper[names[c]] for c in missing},
            "geometry": {"affine_and_header_from": case.files[given[0]].name,
                         "shape": list(reference.data.shape)},
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "resume_key": resume_key,
        }
        if confidence is not None:
            target = output_folder / "confidence" / f"{case.case_id}.nii.gz"
            write_nifti(target, from_canonical(confidence, reference.affine).astype(np.float32), reference.affine,
                        reference.header)
            written.append(target)
            sidecar["confidence"] = {"file": f"confidence/{case.case_id}.nii.gz", "definition": CONFIDENCE_DEFINITION}
        target = output_folder / f"{case.case_id}_imputation.json"
        write_json(target, sidecar)
        written.append(target)
        logger.info("%s: imputed %s from %s", case.case_id, ", ".join(names[c] for c in missing),
                    ", ".join(names[c] for c in given))
    return written


