"""Whether an ablation's stored evaluation still describes its model (the runners reuse it instead of rescoring)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

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
