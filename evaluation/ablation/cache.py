"""What the ablation runners may reuse: a stored evaluation that still describes its model (instead of rescoring), a
finished stage of the precision asked for (instead of retraining)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from codebrain_seg.checkpoints import load_checkpoint
from codebrain_seg.errors import InputError
from codebrain_seg.io import read_json


def evaluation_is_current(folder: Path, checkpoints: Sequence[Path], settings: dict[str, Any],
                          methods: Sequence[str]) -> dict[str, Any] | None:
    """The evaluation's summary when it is newer than every checkpoint, made with ``settings`` and scored every one
    of ``methods`` (paper protocol, whole image), else None."""
    path = folder / "summary.json"
    if not path.is_file():
        return None
    newest = max(p.stat().st_mtime for p in checkpoints)
    if path.stat().st_mtime < newest:
        return None
    summary = read_json(path)
    if any(summary.get(key) != value for key, value in settings.items()):
        return None
    scored = summary.get("summary", {}).get("paper", {}).get("image", {})
    if any(method not in scored for method in methods):
        return None
    return summary


def check_reused_precision(stage_dir: Path, precision: str) -> None:
    """InputError when ``precision`` was asked for explicitly and the finished stage in ``stage_dir`` was trained in
    another one (reusing it would put the wrong precision's model in the table); ``auto`` accepts any."""
    if precision == "auto":
        return
    trained = load_checkpoint(stage_dir / "checkpoint_final.pth", what="training checkpoint").get("precision")
    if trained != precision:
        raise InputError(f"{stage_dir} is finished in {trained} but --precision {precision} was asked for: a "
                         "finished stage is reused, never retrained, so run the other precision under its own "
                         "$codebrain_results (same preprocessed data) or use --precision auto to reuse it")


def check_reused_prior_init(stage_dir: Path, prior_init: str) -> None:
    """InputError when the finished CodeBrain Stage II in ``stage_dir`` started its prior encoder otherwise than
    ``prior_init`` asks (checkpoints from before the warm start record nothing: they started from random weights)."""
    state = load_checkpoint(stage_dir / "checkpoint_final.pth", what="training checkpoint")
    trained = state.get("prior_initialised_from", "random")
    if trained != prior_init:
        raise InputError(f"{stage_dir} is a Stage II whose prior encoder started from {trained}, but the ablation "
                         f"trains every arm's from {prior_init} (an arm without F_c has no common encoder to start "
                         "from): a finished stage is reused, never retrained, so retrain that stage with "
                         f"codebrain_train --stage 2 --prior-init {prior_init} --overwrite, or run the ablation under "
                         "its own $codebrain_results")


def scored_checkpoint(stage_dir: Path, checkpoint: str) -> str:
    """The checkpoint to score for a row asking for ``checkpoint`` of the finished stage in ``stage_dir``:
    ``final`` instead of ``best`` when the best validation was at the final iteration (the same weights, so the
    evaluation is made once and shared), else ``checkpoint``."""
    if checkpoint != "best":
        return checkpoint
    best, final = (stage_dir / f"checkpoint_{name}.pth" for name in ("best", "final"))
    if not (best.is_file() and final.is_file()):
        return checkpoint  # the evaluation reports the missing file
    iterations = [load_checkpoint(path, what="training checkpoint").get("iteration") for path in (best, final)]
    return "final" if iterations[0] is not None and iterations[0] == iterations[1] else checkpoint
