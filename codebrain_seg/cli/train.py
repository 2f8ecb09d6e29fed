"""``codebrain_train -d D -f F``: train CodeBrain Stage I and/or Stage II on one fold (torchrun for DDP)."""
from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from codebrain_seg.cli.common import run_cli
from codebrain_seg.run.methods import trainable_methods
from codebrain_seg.run.training import run_training
from codebrain_seg.variants import (
    CODE_DIM_LEVELS,
    CODEBRAIN_ABLATIONS,
    CODEBRAIN_VARIANTS,
    MAX_CODE_DIM,
    V1_CODE_DIM,
    copedit_ablation,
    parse_loss_weights,
)
from trainers.options import COMPILE_MIN_ITERATIONS


def _loss_weights(text: str) -> tuple[float, float]:
    try:
        return parse_loss_weights(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _code_dim(text: str) -> int:
    if not text.strip().isdigit() or not 1 <= int(text) <= MAX_CODE_DIM:
        raise argparse.ArgumentTypeError(f"code dimension must be an integer in 1..{MAX_CODE_DIM} (the v1 paper's "
                                         f"Fig. 6 uses 4..7), got {text!r}")
    return int(text)


def add_variant_arguments(parser: argparse.ArgumentParser, what: str = "train") -> None:
    """``--ablation``, ``--loss-weights``, ``--variant``, ``--code-dim``: which CodeBrain variant (and so which
    results folder); shared by codebrain_train, codebrain_impute and codebrain_evaluate_imputation."""
    chosen = "" if what == "train" else " (selects the model folder trained with the same option)"
    parser.add_argument("--ablation", choices=list(CODEBRAIN_ABLATIONS), default="none",
                        help="; ".join(f"{name}: {text}" for name, text in CODEBRAIN_ABLATIONS.items())
                        + " (results go to CodeBrain-<ablation>__...)" + chosen)
    parser.add_argument("--loss-weights", type=_loss_weights, default=None, metavar="LAMBDA_M,LAMBDA_A",
                        help="Stage I reconstruction weights of the missing and the available sequences (default: "
                             "the plans', 20,5 as in the paper; 1,1 = the equal-weights ablation); a pair other "
                             "than the plans' is added to the results folder name, e.g. CodeBrain-lm1-la1__..."
                             + chosen)
    parser.add_argument("--variant", choices=list(CODEBRAIN_VARIANTS), default="cvpr",
                        help="; ".join(f"{name}: {text}" for name, text in CODEBRAIN_VARIANTS.items())
                        + " (v1 results go to CodeBrain-v1__...)" + chosen)
    parser.add_argument("--code-dim", type=_code_dim, default=None, metavar="D",
                        help=f"code dimension d: D FSQ channels of {CODE_DIM_LEVELS} levels each (the v1 paper's "
                             f"Fig. 6 rule); default: the plans' levels (cvpr) or {V1_CODE_DIM} x {CODE_DIM_LEVELS} "
                             "(v1); adds -dD to the results folder name" + chosen)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of codebrain_train."""

    parser = argparse.ArgumentParser(prog="codebrain_train", description=__doc__)
    parser.add_argument("-d", "--dataset", required=True, help="dataset id (137), full or short name")
    parser.add_argument("-f", "--fold", required=True, type=int, help="fold of splits_final.json")
    parser.add_argument("-c", "--configuration", default=None,
                        help="plans configuration (default: 2d with a GPU, 2d_cpu without; copedit: 3d_copedit "
                             "with a GPU, 3d_copedit_cpu without; a cardiac missing-slice dataset: 3d_cardiac / "
                             "3d_cardiac_cpu)")
    parser.add_argument("--stage", choices=["1", "2", "all"], default="all", help="stage(s) to train")
    parser.add_argument("--iterations", type=int, default=None, help="iterations per stage (default: the plans)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto = cuda when available, else cpu")
    parser.add_argument("--continue", dest="continue_training", action="store_true",
                        help="resume from checkpoint_latest.pth (the default now: a rerun resumes, and a finished "
                             "stage is left as it is)")
    parser.add_argument("--overwrite", action="store_true",
                        help="start the stage(s) over: delete their checkpoints, checkpoint_final.pth included")
    add_variant_arguments(parser)
    parser.add_argument("--method", choices=trainable_methods(), default="codebrain",
                        help="codebrain; regression (the direct-regression baseline: same loop, no codes); copedit "
                             "(CoPeDiT: CoPeVAE then MDiT3D on 3D volumes, configurations 3d_copedit / "
                             "3d_copedit_cpu)")
    parser.add_argument("--prompts", choices=["learned", "mask"], default="learned",
                        help="copedit: learned completeness prompts (default) or binary mask codes (the paper's "
                             "ablation; results go to CoPeDiT-mask__...)")
    parser.add_argument("--layout", choices=["shared", "per_count"], default="shared",
                        help="copedit: one MDiT3D for every missing pattern (default) or one per missing count "
                             "with the given sequences first (the paper's layout; CoPeDiT-per_count__...)")
    parser.add_argument("--compile", nargs="?", const="on", choices=["auto", "on", "off"], default="auto",
                        help="torch.compile the trained networks: auto (default) = for runs of at least "
                             f"{COMPILE_MIN_ITERATIONS} iterations per stage, where the minutes of compilation repay "
                             "themselves; --compile alone = on")
    parser.add_argument("--num-workers", type=int, default=None,
                        help="data augmentation processes (default: 0 on CPU, up to 4 per GPU)")
    parser.add_argument("--seed", type=int, default=1337, help="seed of weights, sampling and augmentation")
    parser.add_argument("--val-every", type=int, default=None,
                        help="validate every N iterations (default: a tenth of the run, at most 10000)")
    parser.add_argument("--save-every", type=int, default=None,
                        help="write checkpoint_latest.pth every N iterations (default: derived from the run)")
    parser.add_argument("--batch-size", type=int, default=None, help="slices per batch and rank (default: plans)")
    parser.add_argument("--log-every", type=int, default=10, help="iterations per metrics.jsonl training record")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                        help="auto = bf16 autocast where the hardware computes bf16 natively (recent GPUs; CPUs with "
                             "AMX or AVX512-BF16), else fp32")
    args = parser.parse_args(argv)
    ablation = args.ablation
    if args.method == "copedit":
        if ablation != "none":
            parser.error("--ablation selects CodeBrain ablations; CoPeDiT's options are --prompts and --layout")
        ablation = copedit_ablation(args.prompts, args.layout)
    elif (args.prompts, args.layout) != ("learned", "shared"):
        parser.error("--prompts and --layout apply to --method copedit only")

    def run() -> None:
        folders = run_training(args.dataset, args.fold, args.configuration, args.stage, method=args.method,
                               ablation=ablation, loss_weights=args.loss_weights, variant=args.variant,
                               code_dim=args.code_dim,
                               iterations=args.iterations, device=args.device,
                               continue_training=args.continue_training, overwrite=args.overwrite,
                               compile={"auto": None, "on": True, "off": False}[args.compile],
                               num_workers=args.num_workers, seed=args.seed, val_every=args.val_every,
                               save_every=args.save_every, batch_size=args.batch_size, log_every=args.log_every,
                               precision=args.precision)
        if os.environ.get("RANK", "0") == "0":
            for stage, folder in folders.items():
                print(f"stage {stage}: {folder}")

    return run_cli(run)


if __name__ == "__main__":
    raise SystemExit(main())
