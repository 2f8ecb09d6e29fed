"""``impute_slices_folder``: ``codebrain_impute`` on a missing-slice (cardiac) dataset — short-axis stacks with missing
slices in, the completed stacks out.

Input folder in nnU-Net naming: ``CASE_0000.nii.gz`` (one channel, the cine frame). The missing slices of a case
are its **all-zero slices** along the planned slice axis, or the slices named by ``--missing-slices 3,4,5``
(0-based indices along the file's slice axis, the same list for every case; they are replaced whatever they
hold). For each case the output folder gets

* ``CASE_0000.nii.gz``: the completed stack on the input's grid (its affine, header and data type): the given
  slices bit for bit the input's, the missing ones filled (rounded and clipped for an integer type);
* ``CASE_imputation.json``: which slices were filled (``filled_slices``) and why, from which slices, by which
  method and model, in which intensity scale.

Both are written atomically (a temporary file, then a rename); the sidecar is written last, and a rerun keeps a
case whose sidecar holds the same key (input file, method, model checkpoints, options). Every case is checked
before anything is written: a bad case (unreadable, not 3D, non-finite, a slice index out of range, every slice
missing) stops the run with one line naming it (exit code 2 from the command).
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from codebrain_seg import paths
from codebrain_seg.errors import InputError, MissingFileError, UserError
from codebrain_seg.inference.model_folders import model_plans, resolve_model_folder
from codebrain_seg.inference.request import ImputationContext
from codebrain_seg.inference.slice_baselines import SliceImputationRequest, planned_slice_axis
from codebrain_seg.io import read_nifti, write_json, write_nifti
from codebrain_seg.results_layout import METHOD_FOLDERS
from codebrain_seg.run.methods import get_method, slice_methods
from planners.plan_and_preprocess import load_plans

logger = logging.getLogger(__name__)

MISSING_SLICES_TASK = "missing_slices"
FILE_PATTERN = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})\.nii\.gz$")
_INDEX_LIST = re.compile(r"^\s*\d+\s*(,\s*\d+\s*)*$")


def parse_missing_slices(text: str | Sequence[int] | None) -> tuple[int, ...] | None:
    """``'3,4,5'`` -> ``(3, 4, 5)``: 0-based slice indices, comma-separated, each once; None stays None.

    Raises:
        InputError: not a comma-separated list of non-negative integers, or an index named twice.
    """
    if text is None:
        return None
    if not isinstance(text, str):
        values = list(text)
        if not values or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0
                                 for v in values):
            raise InputError(f"--missing-slices must be non-negative slice indices, got {values!r}")
    else:
        if not _INDEX_LIST.match(text):
            raise InputError(f"--missing-slices {text!r} is not a list of slice indices: give 0-based indices along "
                             "the slice axis separated by commas, e.g. --missing-slices 3,4,5")
        values = [int(v) for v in text.split(",")]
    if len(set(values)) != len(values):
        raise InputError(f"--missing-slices {text!r} names a slice twice")
    return tuple(sorted(int(v) for v in values))


def slice_dataset_plans(dataset: str | int | None, model_folder: str | Path | None = None,
                        fold: int | str | None = None) -> dict[str, Any] | None:
    """The plans when the request is for a missing-slice dataset (from the model folder, else the dataset's
    preprocessed plans), else None (also when no plans can be found: the caller reports that)."""
    try:
        if model_folder is not None:
            plans = model_plans(resolve_model_folder(model_folder, fold)[0])
        elif dataset is not None:
            plans = load_plans(paths.preprocessed_dataset_dir(dataset))
        else:
            return None
    except UserError:
        return None
    return plans if plans.get("task") == MISSING_SLICES_TASK else None


def missing_flags(data: np.ndarray, axis: int, listed: tuple[int, ...] | None, case_id: str) -> tuple[np.ndarray, str]:
    """Per-slice missing flags of one stack and why: the listed indices, else the all-zero slices."""
    count = data.shape[axis]
    if listed is not None:
        outside = [k for k in listed if k >= count]
        if outside:
            raise InputError(f"case {case_id}: --missing-slices {','.join(map(str, outside))} out of range: the stack "
                             f"has {count} slices along axis {axis} (indices 0..{count - 1})")
        flags = np.zeros(count, bool)
        flags[list(listed)] = True
        reason = "--missing-slices"
    else:
        flags = ~np.moveaxis(data, axis, -1).reshape(-1, count).any(axis=0)
        reason = "all-zero slice"
    if flags.all():
        raise InputError(f"case {case_id}: every one of its {count} slices is missing; at least one must be given")
    return flags, reason


def _scan(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise MissingFileError(f"input folder {folder} does not exist")
    cases, problems = {}, []
    for path in sorted(folder.iterdir()):
        match = FILE_PATTERN.match(path.name)
        if not match:
            if path.name.endswith((".nii.gz", ".nii")):
                logger.warning("%s ignored: not named CASE_0000.nii.gz", path.name)
            continue
        if match.group("channel") != "0000":
            problems.append(f"{path.name}: a short-axis stack has one channel (_0000), got _{match.group('channel')}")
            continue
        cases[match.group("case")] = path
    if problems:
        raise InputError(f"{folder}: " + "; ".join(problems) + "; nothing was written")
    if not cases:
        raise MissingFileError(f"{folder} holds no CASE_0000.nii.gz file")
    return cases


def _named(error: UserError, case_id: str) -> str:
    message = str(error)
    return message if message.startswith(f"case {case_id}") else f"case {case_id}: {message}"


def _refuse(problems: list[str], folder: Path) -> None:
    if len(problems) == 1:
        raise InputError(f"{problems[0]} (in {folder}; nothing was written)")
    if problems:
        raise InputError(f"{len(problems)} problems in {folder}, nothing was written: " + "; ".join(problems))


def _resume_key(path: Path, method: str, model_key: dict[str, Any], listed: tuple[int, ...] | None,
                options: dict[str, Any]) -> str:
    stat = path.stat()
    payload = {"input": [path.name, stat.st_size, stat.st_mtime_ns], "method": method, "model": model_key,
               "missing_slices": list(listed) if listed is not None else None, "options": options}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _cast_like(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype)


def impute_slices_folder(dataset: str | int | None, fold: int | str | None, input_folder: str | Path,
                         output_folder: str | Path, configuration: str | None = None, method: str | None = None,
                         device: str = "cpu", missing_slices: str | Sequence[int] | None = None,
                         checkpoint: str = "final", prompts: str = "learned",
                         model_folder: str | Path | None = None) -> list[Path]:
    """Fill the missing slices of every case of ``input_folder`` (module docstring); returns the files written.

    Args:
        dataset: the cardiac dataset (id or name) the model was trained on; not needed with ``model_folder``.
        fold: the model's fold (default 0).
        input_folder: ``CASE_0000.nii.gz`` files.
        output_folder: where the completed stacks and sidecars go (not the input folder: the stacks would
            replace the inputs).
        configuration: the cardiac configuration (default: the one trained for the fold, else ``3d_cardiac_cpu``).
        method: a slice method of the registry: ``copedit`` (default), ``linear``, ``nearest``, ``zero``.
        device: torch device of the model.
        missing_slices: ``'3,4,5'`` (or a list): these slices are missing in every case; None: the all-zero ones.
        checkpoint: ``final``, ``best`` or ``latest``.
        prompts: ``learned`` or ``mask`` (a CoPeDiT model trained with ``--prompts mask``).
        model_folder: predict from this CoPeDiT model folder alone (its plans.json and checkpoints).
    """
    listed = parse_missing_slices(missing_slices)
    input_folder, output_folder = Path(input_folder), Path(output_folder)
    model_dir = None
    if model_folder is not None:
        model_dir, dataset_name, folder_configuration, prefix = resolve_model_folder(model_folder, fold)
        if prefix.split("-")[0] != METHOD_FOLDERS["copedit"]:
            raise InputError(f"{model_dir.parent} is not a CoPeDiT model folder: missing slices are filled by "
                             f"{', '.join(slice_methods())}")
        fold = int(model_dir.name[5:]) if model_dir.name[5:].isdigit() else model_dir.name[5:]
        configuration = configuration or folder_configuration
        method = method or "copedit"
        plans = model_plans(model_dir)
    else:
        if dataset is None:
            raise InputError("give the model: -d DATASET (with -f and -c) or -m MODEL_FOLDER")
        dataset_name = paths.resolve_dataset(dataset)
        plans = load_plans(paths.preprocessed_dataset_dir(dataset_name))
        fold = 0 if fold is None else fold
    if plans.get("task") != MISSING_SLICES_TASK:
        raise InputError(f"{dataset_name or model_dir} is not a missing-slice dataset: --missing-slices and the slice "
                         "methods apply to short-axis stacks (codebrain_convert_cardiac)")
    method = method or "copedit"
    spec = get_method(method)
    if input_folder.resolve() == output_folder.resolve():
        raise InputError(f"-o {output_folder} is the input folder: the completed stacks would replace the inputs; "
                         "give another output folder")
    request = SliceImputationRequest(planned_slice_axis(plans))
    cases = _scan(input_folder)
    volumes, problems = {}, []
    for case_id, path in cases.items():
        try:
            volume = read_nifti(path, dtype=None)
            data = np.asarray(volume.data)
            if not np.isfinite(data).all():
                raise InputError(f"case {case_id}: {path.name} has non-finite voxels (NaN or inf)")
            axis = request.axis(volume.affine)
            flags, reason = missing_flags(data, axis, listed, case_id)
            volumes[case_id] = (volume, volume.header.get_data_dtype(), axis, flags, reason)
        except UserError as error:
            problems.append(_named(error, case_id))
    _refuse(problems, input_folder)
    # The model is loaded (and a missing Stage II reported) before anything is written.
    context = ImputationContext(plans=plans, dataset=dataset_name, fold=fold if fold is not None else 0,
                                configuration=configuration or "", device=device, model_dir=model_dir,
                                options={"checkpoint": checkpoint, "prompts": prompts})
    imputer = spec.build_slice_imputer(context)
    check = getattr(imputer, "check_slices", None)
    for case_id, (volume, _, _, flags, _) in volumes.items():
        if check is not None and flags.any():
            try:
                check(volume.data.shape, volume.affine, flags, f"case {case_id}")
            except UserError as error:
                problems.append(_named(error, case_id))
    _refuse(problems, input_folder)
    output_folder.mkdir(parents=True, exist_ok=True)
    model_key = imputer.fingerprint() if hasattr(imputer, "fingerprint") else {}
    model_info = dict(getattr(imputer, "model_info", {}) or {"method": method})
    used_configuration = getattr(imputer, "configuration_name", configuration)
    written: list[Path] = []
    for case_id, (volume, dtype, axis, flags, reason) in volumes.items():
        if not flags.any():
            logger.info("%s: no slice is missing (none all zero), nothing to fill", case_id)
            continue
        path = cases[case_id]
        key = _resume_key(path, method, model_key, listed, {"checkpoint": checkpoint, "prompts": prompts,
                                                           "configuration": used_configuration})
        for leftover in output_folder.glob(f".{case_id}_*.tmp*"):
            leftover.unlink()  # a write cut short by a kill
        target, sidecar_path = output_folder / f"{case_id}_0000.nii.gz", output_folder / f"{case_id}_imputation.json"
        if target.is_file() and sidecar_path.is_file():
            try:
                if json.loads(sidecar_path.read_text()).get("resume_key") == key:
                    logger.info("%s: already filled by this method in %s (an earlier run), kept", case_id,
                                output_folder)
                    continue
            except (OSError, ValueError):
                pass  # a damaged sidecar: fill again
        data = np.asarray(volume.data)
        filled, info = imputer.impute_slices(data.astype(np.float32), volume.affine, volume.spacing, flags,
                                             f"case {case_id}")
        output = data.copy()
        moved_out, moved_in = np.moveaxis(output, axis, -1), np.moveaxis(filled, axis, -1)
        moved_out[..., flags] = _cast_like(moved_in[..., flags], output.dtype)
        write_nifti(target, output, volume.affine, volume.header)
        written.append(target)
        sidecar = {
            "case": case_id,
            "method": method,
            "input": path.name,
            "output": target.name,
            "slice_axis": axis,
            "num_slices": int(len(flags)),
            "filled_slices": [int(k) for k in np.flatnonzero(flags)],
            "given_slices": [int(k) for k in np.flatnonzero(~flags)],
            "missing_because": reason,
            "slice_indices": "0-based, along the file's voxel axis slice_axis",
            "given_slices_written": "unchanged, bit for bit the input's",
            "model": {"dataset": dataset_name, "fold": fold, "configuration": used_configuration, **model_info},
            "method_info": info,
            "intensity_scale": getattr(imputer, "intensity_scale", ""),
            "geometry": {"affine_and_header_from": path.name, "shape": list(data.shape),
                         "dtype": str(np.dtype(dtype))},
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "resume_key": key,
        }
        write_json(sidecar_path, sidecar)
        written.append(sidecar_path)
        logger.info("%s: filled slices %s (%s) with %s", case_id, sidecar["filled_slices"], reason, method)
    return written
