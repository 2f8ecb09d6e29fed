"""``codebrain_train -d D -f F``: train CodeBrain Stage I and/or Stage II on one fold (torchrun for DDP)."""
from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from codebrain_seg.cli.common import run_cli
from codebrain_seg.cli.variant_arguments import add_variant_arguments
from codebrain_seg.run.methods import trainable_methods
from codebrain_seg.run.training import run_training
from codebrain_seg.variants import copedit_ablation
from trainers.options import COMPILE_MIN_ITERATIONS, PRIOR_INITS


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
    parser.add_argument("--prior-init", choices=list(PRIOR_INITS), default=PRIOR_INITS[0],
                        help="CodeBrain Stage II: start the prior encoder from Stage I's common encoder (default; "
                             "same input, only the code head is new) or from random weights, as the reference")
    args = parser.parse_args(argv)
    ablation = args.ablation
    if args.method == "copedit":
        if ablation != "none":
            parser.error("--ablation selects CodeBrain ablations; CoPeDiT's options are --prompts and --layout")
        ablation = copedit_ablation(args.prompts, args.layout)
    elif (args.prompts, args.layout) != ("learned", "shared"):
        parser.error("--prompts and --layout apply to --method copedit only")
    if args.method != "codebrain" and args.prior_init != PRIOR_INITS[0]:
        parser.error("--prior-init applies to --method codebrain (its Stage II) only")

    def run() -> None:
        folders = run_training(args.dataset, args.fold, args.configuration, args.stage, method=args.method,
                               ablation=ablation, loss_weights=args.loss_weights, variant=args.variant,
                               code_dim=args.code_dim,
                               iterations=args.iterations, device=args.device,
                               continue_training=args.continue_training, overwrite=args.overwrite,
                               compile={"auto": None, "on": True, "off": False}[args.compile],
                               num_workers=args.num_workers, seed=args.seed, val_every=args.val_every,
                               save_every=args.save_every, batch_size=args.batch_size, log_every=args.log_every,
                               precision=args.precision, prior_init=args.prior_init)
        if os.environ.get("RANK", "0") == "0":
            for stage, folder in folders.items():
                print(f"stage {stage}: {folder}")

    return run_cli(run)


if __name__ == "__main__":
    raise SystemExit(main())
