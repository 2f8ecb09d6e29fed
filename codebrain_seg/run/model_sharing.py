"""Sharing a trained model as one file: ``export_model`` (``codebrain_export_model``) and ``install_model``
(``codebrain_install_model``), nnU-Net's ``export_model_to_zip`` / ``install_pretrained_model_from_zip``.

The zip holds one model folder of ``$codebrain_results`` with the chosen folds, and a manifest::

    manifest.json
    DatasetXXX_Name/<Method>[<tags>]__<plans>__<configuration>/
        plans.json  dataset.json
        fold_F/stage1/checkpoint_final.pth  fold_F/stage2/checkpoint_final.pth

Only the final checkpoints travel (not ``latest`` / ``best``, logs, caches or evaluations); a final Stage II
checkpoint carries the frozen Stage I networks, so the folder imputes on its own and stays ``weights_only``
loadable. ``manifest.json`` records the format, package and torch versions, the SHA-256 and size of every file,
and what the model expects (channel names, intensity scale, configuration, method, variant, folds).

Installing checks everything before writing anything: the manifest is present and well formed, every member is a
file of the manifest inside the model folder (no absolute path, no ``..``: a zip-slip member is refused), every
checksum matches. The folder is extracted beside its target under a hidden name and renamed into place; an
installed model of the same name is replaced only with ``overwrite``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import zipfile
import zlib
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Sequence

import torch

from codebrain_seg import paths
from codebrain_seg.errors import ExistingFileError, InputError, MissingFileError
from codebrain_seg.inference.copedit import INTENSITY_SCALE as COPEDIT_INTENSITY_SCALE
from codebrain_seg.inference.model_folders import model_folder_prefix, model_plans
from codebrain_seg.inference.slice_predictor import INTENSITY_SCALE as SLICE_INTENSITY_SCALE
from codebrain_seg.io import atomic_path, read_json
from codebrain_seg.plans import PLANS_NAME, Plans
from codebrain_seg.results_layout import STAGE_FINAL, copedit_folder_name, model_folder_name
from codebrain_seg.run.methods import get_method
from codebrain_seg.variants import CodeBrainVariant

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
SHAREABLE = ("codebrain", "regression", "copedit")


def package_version() -> str:
    """The installed ``codebrain_seg`` version ("unknown" when run from a tree that is not installed)."""
    try:
        return metadata.version("codebrain_seg")
    except metadata.PackageNotFoundError:
        return "unknown"


def sha256(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _model_folder(dataset_folder: Path, method: str, configuration: str | None, folds: Sequence[str],
                  codebrain: CodeBrainVariant, prompts: str, layout: str) -> Path:
    """The results folder of the model to export (the only finished one of its prefix when no configuration)."""
    if method == "codebrain":
        prefix = model_folder_prefix(codebrain) if codebrain.loss_weights is None else None
        if prefix is None:  # the weights name a folder relative to the plans: read them from the model's own plans
            base = model_folder_prefix(CodeBrainVariant(codebrain.ablation, None, codebrain.variant,
                                                        codebrain.code_dim))
            prefix = _weights_prefix(dataset_folder, base, configuration, codebrain)
    elif method == "copedit":
        prefix = copedit_folder_name(prompts, layout)
    else:
        prefix = get_method(method).folder_name or ""
    if configuration is not None:
        return dataset_folder / model_folder_name(configuration, trainer=prefix)
    found = sorted(folder for folder in dataset_folder.glob(f"{prefix}__*")
                   if folder.name.split("__")[0] == prefix and (folder / f"fold_{folds[0]}").is_dir())
    if len(found) == 1:
        return found[0]
    listing = ", ".join(folder.name.split("__")[-1] for folder in found) or "none"
    raise InputError(f"give the configuration with -c: {dataset_folder} holds {len(found)} {prefix} model(s) with "
                     f"fold {folds[0]} (configurations: {listing})")


def _weights_prefix(dataset_folder: Path, base: str, configuration: str | None, codebrain: CodeBrainVariant) -> str:
    if configuration is None:
        raise InputError("--loss-weights selects a model folder relative to its plans: give the configuration (-c)")
    plans = model_plans(dataset_folder / model_folder_name(configuration, trainer=base) / "fold_0")
    planned = Plans(plans).configuration(configuration).loss.reconstruction
    return "CodeBrain" + codebrain.tag(planned)


def _fold_files(model_folder: Path, fold: str, stages: Iterable[int]) -> list[Path]:
    fold_dir = model_folder / f"fold_{fold}"
    if not fold_dir.is_dir():
        raise MissingFileError(f"{fold_dir} does not exist: train fold {fold} first (codebrain_train -f {fold})")
    last = max(stages)
    final = fold_dir / f"stage{last}" / STAGE_FINAL
    if not final.is_file():
        raise MissingFileError(f"{final} is missing: fold {fold} has not finished Stage {last}; only a finished "
                               f"model can be exported (finish it with codebrain_train)")
    return sorted(path for path in fold_dir.glob(f"stage*/{STAGE_FINAL}") if path.is_file())


def export_model(dataset: str | int, folds: Sequence[int | str], output: str | Path,
                 configuration: str | None = None, method: str = "codebrain", *, ablation: str = "none",
                 loss_weights: Sequence[float] | str | None = None, variant: str = "cvpr",
                 code_dim: int | None = None, prompts: str = "learned", layout: str = "shared",
                 overwrite: bool = False) -> Path:
    """Write the model folder of ``folds`` (final checkpoints, plans, dataset.json) and a manifest to a zip.

    Args:
        dataset: id or name of the dataset the model was trained on (looked up in ``$codebrain_results``).
        folds: the folds to include.
        output: the ``.zip`` to write (atomically).
        configuration: the model's configuration (default: the only one trained for the first fold).
        method: ``codebrain``, ``regression`` or ``copedit``.
        ablation, loss_weights, variant, code_dim, prompts, layout: the variant, as given to ``codebrain_train``.
        overwrite: replace an existing ``output``.

    Returns:
        The zip written.
    """
    if method not in SHAREABLE:
        raise InputError(f"--method {method!r} has no trained model to export; one of {', '.join(SHAREABLE)}")
    spec = get_method(method)
    output = Path(output)
    if output.suffix != ".zip":
        raise InputError(f"the output {output} must end with .zip")
    if output.exists() and not overwrite:
        raise ExistingFileError(f"{output} exists: give another name or --overwrite")
    results = paths.results_root()
    dataset_name = paths.resolve_dataset(dataset, [results])
    folds = [str(fold) for fold in folds] or ["0"]
    codebrain = CodeBrainVariant(ablation, loss_weights, variant, code_dim)  # type: ignore[arg-type]
    model_folder = _model_folder(results / dataset_name, method, configuration, folds, codebrain, prompts, layout)
    if not model_folder.is_dir():
        raise MissingFileError(f"no trained model: {model_folder} does not exist (train it with codebrain_train)")
    configuration = model_folder.name.split("__")[-1]
    plans_file = next((p for p in (model_folder / "plans.json", model_folder / f"{PLANS_NAME}.json") if p.is_file()),
                      None)
    if plans_file is None:
        raise MissingFileError(f"{model_folder} has no plans.json: not a model folder written by codebrain_train")
    plans = read_json(plans_file)
    view = Plans(plans)
    view.configuration(configuration)
    files = [plans_file] + [p for p in (model_folder / "dataset.json",) if p.is_file()]
    for fold in folds:
        files += _fold_files(model_folder, fold, spec.stages)
    prefix = PurePosixPath(dataset_name, model_folder.name)
    members = {str(prefix / ("plans.json" if path == plans_file else path.relative_to(model_folder).as_posix())): path
               for path in files}
    manifest = {
        "format_version": FORMAT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "codebrain_seg_version": package_version(),
        "torch_version": torch.__version__,
        "dataset": dataset_name,
        "model_folder": model_folder.name,
        "method": method,
        "configuration": configuration,
        "folds": folds,
        "variant": {**codebrain.as_options(), "prompts": prompts, "layout": layout,
                    "folder_prefix": model_folder.name.split("__")[0]},
        "expects": {"channel_names": view.channel_names,
                    "input_files": {f"CASE_{i:04d}.nii.gz": name for i, name in enumerate(view.channel_names)},
                    "intensity_scale": COPEDIT_INTENSITY_SCALE if method == "copedit" else SLICE_INTENSITY_SCALE,
                    "intensity_reference": plans.get("intensity_reference", {})},
        "files": {name: {"sha256": sha256(path), "size": path.stat().st_size} for name, path in members.items()},
    }
    with atomic_path(output) as temp, zipfile.ZipFile(temp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(MANIFEST, json.dumps(manifest, indent=2) + "\n")
        for name, path in members.items():
            archive.write(path, name)
    logger.info("exported %s (%d file(s), folds %s) to %s", model_folder.name, len(members), ", ".join(folds), output)
    return output


def _safe_member(name: str, prefix: PurePosixPath, zip_path: Path) -> PurePosixPath:
    """A member name of the manifest, checked: relative, no ``..``, inside the model folder."""
    member = PurePosixPath(name)
    if (member.is_absolute() or name.startswith(("/", "\\")) or "\\" in name or ".." in member.parts
            or (member.parts and ":" in member.parts[0]) or member.parts[:2] != prefix.parts or len(member.parts) < 3):
        raise InputError(f"{zip_path}: member {name!r} lies outside the model folder {prefix} (an absolute path or "
                         f"'..'): refused, nothing was installed; the zip is not a codebrain_export_model file")
    return member


def read_manifest(archive: zipfile.ZipFile, zip_path: Path) -> dict[str, Any]:
    """The checked manifest of an exported model (format, dataset and model folder names, file list)."""
    if MANIFEST not in archive.namelist():
        raise InputError(f"{zip_path} has no {MANIFEST}: not a model exported by codebrain_export_model; nothing "
                         f"was installed")
    try:
        manifest = json.loads(archive.read(MANIFEST))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{zip_path}: {MANIFEST} is not valid JSON ({error}); nothing was installed") from error
    if not isinstance(manifest, dict):
        raise InputError(f"{zip_path}: {MANIFEST} is not a JSON object; nothing was installed")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise InputError(f"{zip_path}: {MANIFEST} format_version {version!r} is not {FORMAT_VERSION} (export it "
                         f"again with this codebrain_seg version); nothing was installed")
    dataset, folder = manifest.get("dataset"), manifest.get("model_folder")
    if (not isinstance(dataset, str) or paths.parse_dataset_folder_name(dataset) is None
            or not isinstance(folder, str) or len(folder.split("__")) != 3 or "/" in folder or "\\" in folder
            or ".." in folder):
        raise InputError(f"{zip_path}: {MANIFEST} names dataset {dataset!r} and model folder {folder!r}, not "
                         f"DatasetXXX_Name and <Method>__<plans>__<configuration>; nothing was installed")
    if not isinstance(manifest.get("files"), dict) or not manifest["files"]:
        raise InputError(f"{zip_path}: {MANIFEST} lists no files; nothing was installed")
    return manifest


def install_model(zip_path: str | Path, overwrite: bool = False) -> Path:
    """Install an exported model into ``$codebrain_results/<DatasetXXX_Name>/<model folder>``; returns that folder.

    Raises:
        MissingFileError: no such zip.
        InputError: not a zip, no manifest, a member outside the model folder or not in the manifest, a checksum
            or size that does not match.
        ExistingFileError: the model folder is installed already (give ``overwrite``).
    """
    zip_path = Path(zip_path)
    if not zip_path.is_file():
        raise MissingFileError(f"{zip_path} does not exist")
    if not zipfile.is_zipfile(zip_path):
        raise InputError(f"{zip_path} is not a zip file (export a model with codebrain_export_model)")
    target_root = paths.results_root()
    with zipfile.ZipFile(zip_path) as archive:
        manifest = read_manifest(archive, zip_path)
        prefix = PurePosixPath(manifest["dataset"], manifest["model_folder"])
        listed = {str(_safe_member(name, prefix, zip_path)): entry for name, entry in manifest["files"].items()}
        for info in archive.infolist():
            if info.filename == MANIFEST or info.is_dir():
                continue
            _safe_member(info.filename, prefix, zip_path)
            if info.filename not in listed:
                raise InputError(f"{zip_path}: member {info.filename!r} is not listed in {MANIFEST}; refused, "
                                 f"nothing was installed")
        names = set(archive.namelist())
        for name, entry in listed.items():
            if name not in names:
                raise InputError(f"{zip_path}: {name} is listed in {MANIFEST} but missing from the zip; nothing was "
                                 f"installed")
            digest = hashlib.sha256()
            try:
                with archive.open(name) as handle:
                    for block in iter(lambda: handle.read(1 << 20), b""):
                        digest.update(block)
            except (zipfile.BadZipFile, OSError, zlib.error) as error:
                raise InputError(f"{zip_path}: {name} cannot be read ({error}); the zip is damaged, nothing was "
                                 f"installed") from error
            if not isinstance(entry, dict) or digest.hexdigest() != entry.get("sha256"):
                raise InputError(f"{zip_path}: checksum mismatch for {name} (the file was changed or damaged after "
                                 f"export); nothing was installed: get an intact copy of the zip")
        target = target_root / manifest["dataset"] / manifest["model_folder"]
        if target.exists() and not overwrite:
            raise ExistingFileError(f"{target} is installed already: remove it or install with --overwrite")
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.install-", dir=target.parent))
        try:
            for name in listed:
                destination = staging / PurePosixPath(name).relative_to(prefix)
                destination.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(name) as source, open(destination, "wb") as sink:
                    shutil.copyfileobj(source, sink, 1 << 20)
            (staging / MANIFEST).write_bytes(archive.read(MANIFEST))
            _move_into_place(staging, target)
        finally:
            if staging.exists():
                shutil.rmtree(staging)
    logger.info("installed %s (folds %s) into %s", manifest["model_folder"], ", ".join(manifest.get("folds", [])),
                target)
    return target


def _move_into_place(staging: Path, target: Path) -> None:
    """Rename ``staging`` to ``target``; an existing ``target`` is moved aside first and deleted afterwards."""
    if not target.exists():
        os.replace(staging, target)
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.replace(target, aside / target.name)
    try:
        os.replace(staging, target)
    except OSError:
        os.replace(aside / target.name, target)
        raise
    finally:
        if not target.exists():  # the restore above failed too: leave the old model where it is
            logger.error("%s could not be restored; it is in %s", target, aside)
        else:
            shutil.rmtree(aside, ignore_errors=True)
