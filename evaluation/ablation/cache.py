"""Whether an ablation's stored evaluation still describes its model (the runners reuse it instead of rescoring)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from codebrain_seg.io import read_json


def evaluation_is_current(folder: Path, checkpoints: Sequence[Path], settings: dict[str, Any],
                           method: str) -> dict[str, Any] | None:
    """The evaluation's summary when it is newer than every checkpoint and made with ``settings``, else None."""
    path = folder / "summary.json"
    if not path.is_file():
        return None
    newest = max(p.stat().st_mtime for p in checkpoints)
    if path.stat().st_mtime < newest:
        return None
    summary = read_json(path)
    if any(summary.get(key) != value for key, value in settings.items()):
        return None
    if method not in summary.get("summary", {}).get("paper", {}).get("image", {}):
        return None
    return summary
