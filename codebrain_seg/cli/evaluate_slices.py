"""``codebrain_evaluate_slices -d D -f F``: missing-slice synthesis of a cardiac dataset, CoPeDiT against the
interpolation, nearest-slice and zero-fill baselines, per missing length (PSNR / SSIM of the filled slices, and with
a segmenter the LV / RV / MYO Dice); thin twin of :func:`evaluation.slices.evaluate.evaluate_slices`."""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from codebrain_seg.cli.common import run_cli
from codebrain_seg.errors import InputError
from evaluation.slices import evaluate as slice_evaluation
from evaluation.slices.evaluate import DEFAULT_METHODS, evaluate_slices
from evaluation.slices.scenarios import DEFAULT_LENGTHS, DEFAULT_RUNS_PER_CASE

PROG = "codebrain_evaluate_slices"


def _positive_list(text: str) -> list[int]:
    parts = [p.strip() for p in str(text).split(",")]
    if not parts or not all(p.isdigit() and int(p) >= 1 for p in parts):
        raise InputError(f"--lengths {text!r} must be positive integers separated by commas, e.g. 1,2,3")
    return [int(p) for p in parts]


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of ``codebrain_evaluate_slices``."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(slice_evaluation.__doc__.split("\n\n")[1:]))
    parser.add_argument("-d", "--dataset", required=True, help="missing-slice dataset id or name (codebrain_convert_"
                                                               "cardiac), planned with codebrain_plan_and_preprocess")
    parser.add_argument("-f", "--fold", type=int, default=0, help="fold whose held-out subjects are evaluated")
    parser.add_argument("-c", "--configuration", default=None,
                        help="cardiac configuration of the CoPeDiT model (default: the one trained for the fold, "
                             "else 3d_cardiac_cpu)")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                        help=f"slice methods, comma-separated (default {','.join(DEFAULT_METHODS)})")
    parser.add_argument("--lengths", default=",".join(map(str, DEFAULT_LENGTHS)),
                        help="missing lengths in consecutive slices (default 1,2,3)")
    parser.add_argument("--runs-per-case", type=int, default=DEFAULT_RUNS_PER_CASE,
                        help=f"interior runs per case and length (default {DEFAULT_RUNS_PER_CASE})")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="CoPeDiT and segmenter device")
    parser.add_argument("--checkpoint", choices=["final", "best", "latest"], default="final",
                        help="CoPeDiT checkpoint (default final)")
    parser.add_argument("--prompts", choices=["learned", "mask"], default="learned",
                        help="CoPeDiT prompts the model was trained with (default learned)")
    parser.add_argument("--ddim-steps", type=int, default=None,
                        help="CoPeDiT DDIM steps (default: the configuration's, 20 / 250)")
    parser.add_argument("--max-cases", type=int, default=None, help="only the first N held-out cases")
    segmentation = parser.add_argument_group("downstream segmentation (LV / RV / MYO Dice)")
    segmentation.add_argument("--segmenter", default=None,
                              help="an nnU-Net model folder (Trainer__Plans__configuration) taking one channel")
    segmentation.add_argument("--train-segmenter", action="store_true",
                              help="train the fold's nnU-Net 3d_fullres segmenter on its labelled training cases "
                                   "if not trained yet")
    segmentation.add_argument("--seg-trainer", default="nnUNetTrainer",
                              help="nnU-Net trainer (nnUNetTrainerShort for a CPU demo)")
    segmentation.add_argument("--seg-recipe", choices=["default", "cpu"], default="default",
                              help="segmenter plans: nnU-Net's (default) or the project's CPU recipe")
    segmentation.add_argument("--seg-gpu-memory-gb", type=float, default=None,
                              help="GPU memory target of nnU-Net's planner (smaller patches on a CPU, e.g. 0.5)")
    segmentation.add_argument("--seg-label-map", default=None,
                              help="the segmenter's labels when its dataset.json does not say: 'LV=3;RV=1;MYO=2'")
    segmentation.add_argument("--num-processes", type=int, default=2, help="nnU-Net preprocessing processes")
    segmentation.add_argument("--tile-step-size", type=float, default=0.5,
                              help="sliding-window step of nnU-Net's predictor as a fraction of the patch (default "
                                   "0.5; 1.0 = no overlap, fastest)")
    segmentation.add_argument("--disable-tta", action="store_true",
                              help="no test-time mirroring (8x faster; a CPU evaluates ~40 volumes per case)")
    segmentation.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                              help="segmenter precision on a CPU")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``codebrain_evaluate_slices``; exit code 2 with one line on bad input."""
    args = build_parser().parse_args(argv)

    def run() -> None:
        result = evaluate_slices(args.dataset, args.fold, args.configuration, args.methods.split(","),
                                 _positive_list(args.lengths), args.runs_per_case, args.device, args.checkpoint,
                                 args.prompts, args.ddim_steps, args.segmenter, args.train_segmenter,
                                 args.seg_trainer, args.seg_recipe, args.seg_gpu_memory_gb, args.seg_label_map,
                                 args.num_processes, args.tile_step_size, not args.disable_tta,
                                 precision=args.precision, max_cases=args.max_cases)
        print((result.output_dir / "table.md").read_text())
        print(f"tables in {result.output_dir}")

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
