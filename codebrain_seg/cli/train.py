"""``codebrain_train -d D -f F``: train CodeBrain Stage I and/or Stage II on one fold (torchrun for DDP)."""
from __future__ import annotations

import argparse
import os
from typing import Sequence

from codebrain_seg.cli.common import run_cli


def _loss_weights(text: str) -> tuple[float, float]:
    from trainers import parse_loss_weights

    try:
        return parse_loss_weights(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of codebrain_train."""
    from trainers import CODEBRAIN_ABLATIONS

    parser = argparse.ArgumentParser(prog="codebrain_train", description=__doc__)
    parser.add_argument("-d", "--dataset", required=True, help="dataset id (137), full or short name")
    parser.add_argument("-f", "--fold", required=True, type=int, help="fold of splits_final.json")
    parser.add_argument("-c", "--configuration", default=None,
                        help="plans configuration (default: 2d with a GPU, 2d_cpu without)")
    parser.add_argument("--stage", choices=["1", "2", "all"], default="all", help="stage(s) to train")
    parser.add_argument("--iterations", type=int, default=None, help="iterations per stage (default: the plans)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto = cuda when available, else cpu")
    parser.add_argument("--continue", dest="continue_training", action="store_true",
                        help="resume from checkpoint_latest.pth")
    parser.add_argument("--ablation", choices=list(CODEBRAIN_ABLATIONS), default="none",
                        help="; ".join(f"{name}: {text}" for name, text in CODEBRAIN_ABLATIONS.items())
                        + " (results go to CodeBrain-<ablation>__...)")
    parser.add_argument("--loss-weights", type=_loss_weights, default=None, metavar="LAMBDA_M,LAMBDA_A",
                        help="Stage I reconstruction weights of the missing and the available sequences (default: "
                             "the plans', 20,5 as in the paper; 1,1 = the equal-weights ablation); a pair other "
                             "than the plans' is added to the results folder name, e.g. CodeBrain-lm1-la1__...")
    parser.add_argument("--method", choices=["codebrain", "regression"], default="codebrain",
                        help="codebrain, or the direct-regression baseline (same loop, no codes)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the trained networks")
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

    def run() -> None:
        from trainers import run_training

        folders = run_training(args.dataset, args.fold, args.configuration, args.stage, method=args.method,
                               ablation=args.ablation, loss_weights=args.loss_weights,
                               iterations=args.iterations, device=args.device,
                               continue_training=args.continue_training, compile=args.compile,
                               num_workers=args.num_workers, seed=args.seed, val_every=args.val_every,
                               save_every=args.save_every, batch_size=args.batch_size, log_every=args.log_every,
                               precision=args.precision)
        if os.environ.get("RANK", "0") == "0":
            for stage, folder in folders.items():
                print(f"stage {stage}: {folder}")

    return run_cli(run)


if __name__ == "__main__":
    raise SystemExit(main())
