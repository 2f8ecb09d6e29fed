"""``codebrain_evaluate_segmentation -d D -f F``: WT/TC/ET Dice of an nnU-Net v2 segmenter fed real, zero-filled and
imputed sequences (thin twin of ``evaluation.segmentation.evaluate.evaluate_segmentation``)."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from codebrain_seg.cli.common import run_cli
from codebrain_seg.cli.impute import add_model_variant_arguments
from evaluation.segmentation.evaluate import evaluate_segmentation


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of codebrain_evaluate_segmentation."""
    parser = argparse.ArgumentParser(prog="codebrain_evaluate_segmentation", description=__doc__)
    parser.add_argument("-d", "--dataset", required=True, help="dataset id (137), full or short name")
    parser.add_argument("-f", "--fold", type=int, required=True,
                        help="fold of splits_final.json: the segmenter trains on its training cases, its labelled "
                             "validation cases are evaluated")
    parser.add_argument("-c", "--configuration", default="2d_cpu",
                        help="CodeBrain configuration of the learned imputation methods (default 2d_cpu)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--segmenter", metavar="NNUNET_MODEL_FOLDER", default=None,
                        help="an existing nnU-Net v2 model folder (Trainer__Plans__configuration), used as it is")
    source.add_argument("--train-segmenter", action="store_true",
                        help="train the fold's nnU-Net 3d_fullres segmenter first if it is not trained yet "
                             "(without either option, a segmenter trained earlier is used)")
    parser.add_argument("--seg-trainer", default="nnUNetTrainer",
                        help="nnU-Net trainer of the segmenter (default nnUNetTrainer, 1000 epochs: a GPU job; "
                             "nnUNetTrainerShort trains for minutes on a CPU, for demos)")
    parser.add_argument("--seg-recipe", choices=["default", "cpu"], default="default",
                        help="default: nnU-Net's plans; cpu: the CPU recipe (2 mm isotropic plans, a 16-256 U-Net, "
                             "patch 64x80x64, batch 2, bf16, a schedule cut to fit 58 minutes; trainer "
                             "nnUNetTrainerCPUDA5 unless --seg-trainer names another), for a segmenter in about an "
                             "hour of CPU (docs/usage/evaluate_segmentation.md)")
    parser.add_argument("--seg-gpu-memory-gb", type=float, default=None,
                        help="GPU memory target given to nnU-Net's planner (default nnU-Net's 8 GB); smaller "
                             "plans a smaller patch and network, e.g. 0.5 for CPU demos")
    parser.add_argument("--seg-label-map", default=None, metavar="'WT=1,2,3;TC=2,3;ET=3'",
                        help="the label values of the segmenter's output that make up WT, TC and ET (default: "
                             "derived from the segmenter's dataset.json: region-based labels and "
                             "regions_class_order, or the BraTS label names)")
    parser.add_argument("--protocol", choices=["fixed", "retrained", "both"], default="fixed",
                        help="fixed (default; CodeBrain's Table 4): one full-modality segmenter fed zero-filled, "
                             "imputed and real inputs; retrained (CoPeDiT's Table 9): per one-missing scenario, a "
                             "'Missing' segmenter trained on the available sequences only and one trained on each "
                             "method's imputations, against the full segmenter; both")
    parser.add_argument("--retrained-scenarios", default=None, metavar="SEQ[,SEQ]",
                        help="the missing sequences the retrained protocol runs (default: every one-missing "
                             "scenario; each trains 1 + methods segmenters), e.g. T1Gd")
    parser.add_argument("--scenarios", choices=["3to1", "all"], default="3to1",
                        help="3to1: the scenarios with one sequence missing (default); all: every pattern")
    parser.add_argument("--methods", default=None,
                        help="comma-separated imputation methods of the registry (default: codebrain,mean); "
                             "zero-fill and full are always evaluated")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="device (default cpu)")
    parser.add_argument("--cases", metavar="FOLDER", default=None,
                        help="evaluate these labelled cases (nnU-Net raw layout: imagesTs/ + labelsTs/, or "
                             "imagesTr/ + labelsTr/) instead of the fold's validation cases")
    parser.add_argument("--tile-step-size", type=float, default=0.5,
                        help="sliding-window step of nnU-Net's predictor as a fraction of the patch (default 0.5; "
                             "1.0 = no overlap, fastest)")
    parser.add_argument("--disable-tta", action="store_true", help="no test-time mirroring (8x faster)")
    add_model_variant_arguments(parser)
    parser.add_argument("-np", "--num-processes", type=int, default=min(4, os.cpu_count() or 1),
                        help="worker processes of nnU-Net's preprocessing")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of codebrain_evaluate_segmentation; returns the exit code."""
    args = build_parser().parse_args(argv)

    def run() -> None:
        methods = None if args.methods is None else args.methods.split(",")
        if args.seg_recipe == "cpu" and args.seg_trainer == "nnUNetTrainer":
            args.seg_trainer = "nnUNetTrainerCPUDA5"  # the recipe's trainer unless another one is named
        result = evaluate_segmentation(
            args.dataset, args.fold, args.configuration, segmenter=args.segmenter,
            train_segmenter=args.train_segmenter, seg_trainer=args.seg_trainer, scenarios=args.scenarios,
            methods=methods, device=args.device, cases=args.cases, gpu_memory_gb=args.seg_gpu_memory_gb,
            tile_step_size=args.tile_step_size, use_mirroring=not args.disable_tta,
            num_processes=args.num_processes, ablation=args.ablation, loss_weights=args.loss_weights,
            variant=args.variant, code_dim=args.code_dim, source_rule=args.source_rule,
            seg_label_map=args.seg_label_map, protocol=args.protocol, seg_recipe=args.seg_recipe,
            retrained_scenarios=None if args.retrained_scenarios is None else args.retrained_scenarios.split(","))
        mapping = result.table.get("mapping", {})
        if mapping:
            channels = ", ".join(f"{c['dataset']} -> {c['segmenter']}" for c in mapping["channels"])
            regions = mapping["segmenter_regions"]
            print(f"segmenter channels: {channels}; regions of its labels: WT {regions['WT']}, TC {regions['TC']}, "
                  f"ET {regions['ET']} ({regions['source']})")
        print(f"segmented {result.predicted} inputs ({result.reused} reused from the cache)")
        for outcome in (result, result.retrained):
            if outcome is None:
                continue
            print(f"{outcome.table.get('protocol', 'fixed')} protocol, mean Dice of WT/TC/ET (%):")
            for row, by_region in outcome.table["dice"].items():
                value = by_region["mean of regions"]["mean"]
                print(f"  {row:<12s} {'' if value is None else f'{100 * value:6.2f}'}")
            for name, path in outcome.files.items():
                print(f"{name}: {path}")

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
