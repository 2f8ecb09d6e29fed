"""``codebrain_impute``: NIfTI cases with any subset of sequences in, the missing sequences out.

Input folder in nnU-Net naming: ``CASE_0000.nii.gz``, ``CASE_0001.nii.gz`` ... in the dataset's channel order. A
sequence is missing when its file is absent or all zero. For each case, only the missing sequences are written to
the output folder (``CASE_XXXX.nii.gz``, float32, the input's affine and header), with a JSON sidecar
``CASE_imputation.json`` (what was imputed from what, by which model, in which intensity scale) and, with
``--save-confidence``, ``confidence/CASE.nii.gz`` (a subfolder, so the output stays a valid nnU-Net input
folder). Given sequences are never written.

Every case is checked before anything is written: an unreadable file, a channel the model does not know, sequences
on different grids or a case with every sequence missing stop the run with one message listing all problems.
Under ``torchrun`` (``WORLD_SIZE`` > 1) rank r imputes cases r, r + WORLD_SIZE, ... of the sorted list.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import nibabel as nib
import numpy as np

from codebrain_seg.cli.common import run_cli

logger = logging.getLogger(__name__)

PROG = "codebrain_impute"
FILE_PATTERN = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})\.nii\.gz$")
GRID_TOLERANCE_MM = 1e-3


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
        raise FileNotFoundError(f"input folder {folder} does not exist")
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
        raise FileNotFoundError(f"{folder} holds no CASE_XXXX.nii.gz file")
    return cases, problems


def check_case(case: InputCase, channel_names: Sequence[str]) -> list[str]:
    """Fill ``case.available``; returns the case's problems (unreadable, different grids, nothing given)."""
    problems, reference = [], None
    case.available, case.zero_files = [], []
    for channel, path in enumerate(case.files):
        if path is None:
            case.available.append(False)
            continue
        try:
            image = nib.load(str(path))
            data = np.asanyarray(image.dataobj)
        except Exception as error:  # nibabel raises many types for corrupt files
            problems.append(f"{path.name}: unreadable NIfTI ({type(error).__name__}: {error})")
            case.available.append(False)
            continue
        shape = data.shape[:3] if data.ndim == 4 and data.shape[3] == 1 else data.shape
        if len(shape) != 3:
            problems.append(f"{path.name}: expected a 3D image, got shape {data.shape}")
        elif reference is None:
            reference = (path.name, shape, image.affine)
        elif shape != reference[1] or not np.allclose(image.affine, reference[2], atol=GRID_TOLERANCE_MM):
            problems.append(f"{path.name} is not on the grid of {reference[0]} (shape {shape} vs {reference[1]}, "
                            "or different affine): all sequences of a case must share one grid")
        given = bool(np.any(data))
        if given and not np.isfinite(data).all():
            problems.append(f"{path.name}: NaN or infinite voxels")
        case.available.append(given)
        if not given:
            case.zero_files.append(channel)
    if not any(case.available) and not problems:
        problems.append(f"case {case.case_id}: every sequence is missing (absent or all zero); at least one of "
                        f"{', '.join(channel_names)} must be given")
    return problems


def _rank_share(cases: list[InputCase]) -> list[InputCase]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))
    if world > 1:
        logger.info("rank %d of %d: %d of %d case(s)", rank, world, len(cases[rank::world]), len(cases))
        return cases[rank::world]
    return cases


def impute_folder(dataset: str | int, fold: int | str, input_folder: str | Path, output_folder: str | Path,
                  configuration: str | None = None, method: str = "codebrain", device: str = "cpu",
                  batch_size: int | None = None, save_confidence: bool = False,
                  checkpoint: str = "final", *, ablation: str = "none",
                  loss_weights: Sequence[float] | str | None = None, variant: str = "cvpr",
                  code_dim: int | None = None, source_rule: str = "random", prompts: str = "learned",
                  layout: str = "shared") -> list[Path]:
    """Impute the missing sequences of every case of ``input_folder`` (module docstring); returns files written.

    Args:
        dataset: dataset id or name the model was trained on (its channel order and plans).
        fold: the model's fold.
        input_folder: ``CASE_XXXX.nii.gz`` files.
        output_folder: where the imputed sequences, sidecars and confidence maps go (may be the input folder).
        configuration: plans configuration of the model (default: see
            :func:`codebrain_seg.predictor.default_configuration`).
        method: a method of the imputation registry: ``codebrain``, ``copedit``, ``regression`` or a baseline
            (``mean``, ``zero``).
        device: torch device for CodeBrain.
        batch_size: slices per forward pass (default: the configuration's Stage II batch).
        save_confidence: also write ``confidence/CASE.nii.gz`` (CodeBrain only).
        checkpoint: ``final``, ``best`` or ``latest``.
        ablation, loss_weights, variant, code_dim: the CodeBrain variant to load, as given to ``codebrain_train``
            (its results folder ``CodeBrain[-v1][-dD][-ablation][-lmM-laA]__...``).
        source_rule: v1 models: ``random`` (default) or ``relevant`` source of the common features.
        prompts, layout: copedit models: ``learned`` (default) or ``mask`` prompts, ``shared`` (default) or
            ``per_count`` MDiT3D layout, as given to ``codebrain_train`` (they select the model folder).
    """
    from codebrain_seg import paths
    from codebrain_seg.geometry import from_canonical, to_canonical
    from codebrain_seg.imputers import ImputationContext, get_imputer
    from codebrain_seg.io import read_nifti, write_json, write_nifti
    from codebrain_seg.predictor import (
        CONFIDENCE_DEFINITION,
        default_configuration,
        load_predictor_plans,
        model_folder_prefix,
    )
    from planners.experiment_planner import get_configuration

    from codebrain_seg.imputers import IMPUTERS

    if method not in IMPUTERS:
        raise ValueError(f"unknown imputation method {method!r}; known: {', '.join(sorted(IMPUTERS))}")
    if save_confidence and method != "codebrain":
        raise ValueError(f"--save-confidence needs the codebrain method (confidence comes from Stage II), "
                         f"not {method!r}")
    dataset_name = paths.resolve_dataset(dataset)
    variant_options = {"ablation": ablation, "loss_weights": loss_weights, "variant": variant, "code_dim": code_dim}
    # Without the plans' loss weights at hand yet, the configuration is looked up by the other tags first.
    prefix = model_folder_prefix(ablation, None, variant, code_dim)
    method_options = {"prompts": prompts, "layout": layout}
    resolver = getattr(IMPUTERS[method], "resolve_configuration", None)
    if configuration is None and resolver is not None:  # a method with a configuration of its own (CoPeDiT)
        configuration = resolver(dataset_name, fold, device, method_options)
    configuration = configuration or default_configuration(dataset_name, fold, device, prefix)
    if loss_weights is not None:
        prefix = model_folder_prefix(ablation, loss_weights, variant, code_dim, dataset_name, configuration)
    plans = load_predictor_plans(dataset_name, fold, configuration, method, prefix)
    get_configuration(plans, configuration)
    names = list(plans["channel_names"])
    input_folder, output_folder = Path(input_folder), Path(output_folder)

    cases, problems = scan_input_folder(input_folder, names)
    for case in cases:
        problems += check_case(case, names)
    if problems:
        raise ValueError(f"{len(problems)} problem(s) in {input_folder}, nothing was written:\n  "
                         + "\n  ".join(problems))
    if device == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch

        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0')) % max(torch.cuda.device_count(), 1)}"
    # The model is loaded (and a missing Stage II reported) before anything is written.
    context = ImputationContext(plans=plans, dataset=dataset_name, fold=fold, configuration=configuration,
                                device=device, options={"checkpoint": checkpoint, "batch_size": batch_size,
                                                        "source_rule": source_rule, **method_options},
                                **variant_options)
    imputer = get_imputer(method, context)
    predictor = getattr(imputer, "predictor", None)
    model_info = dict(predictor.model_info) if predictor is not None else {"method": method}
    reference_upper = {name: plans["intensity_reference"][name]["median_p99_5"] for name in names}

    written: list[Path] = []
    for case in _rank_share(cases):
        missing = [c for c, flag in enumerate(case.available) if not flag]
        if not missing:
            logger.info("%s: every sequence is given, nothing to impute", case.case_id)
            continue
        given = [c for c, flag in enumerate(case.available) if flag]
        reference = read_nifti(case.files[given[0]])
        images = np.zeros((len(names),) + reference.data.shape, np.float32)
        for channel in given:
            images[channel] = reference.data if channel == given[0] else read_nifti(case.files[channel]).data
        canonical = to_canonical(images, reference.affine)
        available = np.array(case.available)
        confidence = None
        if save_confidence:
            output, confidence = predictor.impute_with_confidence(canonical, available)
        else:
            output = imputer.impute(canonical, available)
        output = from_canonical(output, reference.affine)
        for channel in missing:
            target = output_folder / f"{case.case_id}_{channel:04d}.nii.gz"
            write_nifti(target, output[channel].astype(np.float32), reference.affine, reference.header)
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


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of ``codebrain_impute``."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("-d", "--dataset", required=True, help="dataset id (137), full or short name of the model")
    parser.add_argument("-f", "--fold", default="0", help="fold of the model (default 0)")
    parser.add_argument("-c", "--configuration", default=None,
                        help="plans configuration (default: the one trained for this fold, else 2d with a CUDA "
                             "device and 2d_cpu without, as codebrain_train)")
    parser.add_argument("-i", "--input", required=True, help="folder of CASE_XXXX.nii.gz files")
    parser.add_argument("-o", "--output", required=True, help="output folder (may be the input folder)")
    parser.add_argument("--device", default="cpu", help="torch device: cpu (default), cuda, cuda:1, ...")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="slices per forward pass (default: the configuration's Stage II batch size)")
    parser.add_argument("--save-confidence", action="store_true",
                        help="also write confidence/CASE.nii.gz from the Stage II ordinal probabilities")
    from codebrain_seg.imputers import IMPUTERS

    parser.add_argument("--method", choices=sorted(IMPUTERS), default="codebrain",
                        help="a method of the imputation registry: codebrain (default), copedit (CoPeDiT, whole 3D "
                             "volumes, mask-free), regression, or a baseline: mean (mean of the given sequences "
                             "rescaled), zero (zero-fill)")
    parser.add_argument("--prompts", choices=["learned", "mask"], default="learned",
                        help="copedit: learned completeness prompts from the frozen tokenizer (default), or the "
                             "binary mask-code ablation (a model trained with codebrain_train --prompts mask)")
    parser.add_argument("--layout", choices=["shared", "per_count"], default="shared",
                        help="copedit: the model layout it was trained with (default shared)")
    parser.add_argument("--checkpoint", choices=["final", "best", "latest"], default="final",
                        help="model checkpoint (default final)")
    add_model_variant_arguments(parser)
    return parser


def add_model_variant_arguments(parser: argparse.ArgumentParser) -> None:
    """The variant options of ``codebrain_train`` (they select the model folder) plus ``--source-rule`` (v1)."""
    from codebrain_seg.cli.train import add_variant_arguments

    add_variant_arguments(parser, what="select")
    parser.add_argument("--source-rule", choices=["random", "relevant"], default="random",
                        help="v1 models: the given sequence whose common features decode a missing one: random "
                             "(default, the v1 paper) or relevant (the highest Stage-I validation PSNR for that "
                             "target, recorded in the checkpoint)")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``codebrain_impute``; exit code 2 with the list of problems on bad input."""
    args = build_parser().parse_args(argv)

    def run() -> None:
        fold = int(args.fold) if str(args.fold).isdigit() else args.fold
        written = impute_folder(args.dataset, fold, args.input, args.output, args.configuration, args.method,
                                args.device, args.batch_size, args.save_confidence, args.checkpoint,
                                ablation=args.ablation, loss_weights=args.loss_weights, variant=args.variant,
                                code_dim=args.code_dim, source_rule=args.source_rule, prompts=args.prompts,
                                layout=args.layout)
        print(f"wrote {len(written)} file(s) to {args.output}")

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
