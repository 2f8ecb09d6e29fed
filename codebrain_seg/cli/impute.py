"""``codebrain_impute``: NIfTI cases with any subset of sequences in, the missing sequences out.

The input and output folders are described in :mod:`codebrain_seg.run.imputation` (``impute_folder``), whose
docstring is this command's epilog.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from codebrain_seg.cli.common import run_cli
from codebrain_seg.cli.variant_arguments import add_variant_arguments
from codebrain_seg.errors import InputError
from codebrain_seg.networks.codebrain import CODE_DECODINGS
from codebrain_seg.run import imputation
from codebrain_seg.run.imputation import impute_folder
from codebrain_seg.run.methods import imputation_methods

PROG = "codebrain_impute"


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of ``codebrain_impute``."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(imputation.__doc__.split("\n\n")[1:]))
    parser.add_argument("-d", "--dataset", default=None,
                        help="dataset id (137), full or short name of the model (not needed with -m)")
    parser.add_argument("-m", "--model-folder", default=None,
                        help="predict from this model folder alone (<Method>__<plans>__<configuration> or its "
                             "fold_F, e.g. installed by codebrain_install_model): no raw or preprocessed dataset "
                             "needed; the variant options are then ignored")
    parser.add_argument("-f", "--fold", default=None, help="fold of the model (default 0)")
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
    parser.add_argument("--method", choices=imputation_methods(), default=None,
                        help="a method of the imputation registry: codebrain (default; with -m: the folder's), "
                             "copedit (CoPeDiT, whole 3D volumes, mask-free), regression, or a baseline: mean (mean "
                             "of the given sequences rescaled), zero (zero-fill)")
    parser.add_argument("--prompts", choices=["learned", "mask"], default="learned",
                        help="copedit: learned completeness prompts from the frozen tokenizer (default), or the "
                             "binary mask-code ablation (a model trained with codebrain_train --prompts mask)")
    parser.add_argument("--layout", choices=["shared", "per_count"], default="shared",
                        help="copedit: the model layout it was trained with (default shared)")
    parser.add_argument("--missing-slices", default=None, metavar="K,K,...",
                        help="a missing-slice (cardiac) dataset: the 0-based indices of the missing slices along the "
                             "slice axis, the same in every case, e.g. 3,4,5 (default: the all-zero slices); "
                             "methods copedit (default), linear, nearest, zero")
    parser.add_argument("--checkpoint", choices=["final", "best", "latest"], default="final",
                        help="model checkpoint (default final)")
    parser.add_argument("--mirror", action="store_true",
                        help="codebrain, regression: average over the slice's in-plane flips (test-time mirroring, "
                             "as nnU-Net's): about 4x the seconds, ~0.1 dB more")
    parser.add_argument("--code-decoding", choices=list(CODE_DECODINGS), default="expected",
                        help="codebrain: Stage II's code levels as their expected value under the ordinal "
                             "probabilities (default) or as the reference's count of positive logits (count)")
    add_model_variant_arguments(parser)
    return parser


def add_model_variant_arguments(parser: argparse.ArgumentParser) -> None:
    """The variant options of ``codebrain_train`` (they select the model folder) plus ``--source-rule`` (v1)."""
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
        if args.dataset is None and args.model_folder is None:
            raise InputError("give the model: -d DATASET (with -f and -c) or -m MODEL_FOLDER")
        written = impute_folder(args.dataset, fold, args.input, args.output, args.configuration, args.method,
                                args.device, args.batch_size, args.save_confidence, args.checkpoint,
                                ablation=args.ablation, loss_weights=args.loss_weights, variant=args.variant,
                                code_dim=args.code_dim, source_rule=args.source_rule, prompts=args.prompts,
                                layout=args.layout, model_folder=args.model_folder,
                                missing_slices=args.missing_slices, mirroring=args.mirror,
                                code_decoding=args.code_decoding)
        print(f"wrote {len(written)} file(s) to {args.output}")

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
