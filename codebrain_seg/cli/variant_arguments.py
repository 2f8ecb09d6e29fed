"""The options that select a CodeBrain variant (``--ablation --loss-weights --variant --code-dim``), shared by
codebrain_train, codebrain_impute, codebrain_export_model and codebrain_evaluate_imputation; a module of its own so
that the commands that only read a model do not import the trainers."""
from __future__ import annotations

import argparse

from codebrain_seg.variants import (
    CODE_DIM_LEVELS,
    CODEBRAIN_ABLATIONS,
    CODEBRAIN_VARIANTS,
    MAX_CODE_DIM,
    V1_CODE_DIM,
    parse_loss_weights,
)


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
