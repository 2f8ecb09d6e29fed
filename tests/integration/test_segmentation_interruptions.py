"""A real ``codebrain_evaluate_segmentation`` subprocess killed (SIGKILL) or interrupted (SIGINT) once its first
segmentation is written: the rerun finishes, keeps what was complete (files untouched) and leaves no partial file.
"""
from __future__ import annotations

import shutil
import signal
import sys

import pytest
from test_interruptions import SIGNALS, interrupt_when
from test_segmentation_eval import DEMO_ID, tiny  # noqa: F401 (tiny is the module's fixture)

from codebrain_seg.cli.evaluate_segmentation import main
from codebrain_seg.io import read_json
from evaluation.segmentation import nnunet_bridge as bridge


@pytest.mark.slow  # two real subprocess runs of the evaluation, 2-4 minutes each on 2 cores: run with -m slow
@pytest.mark.parametrize("sig", SIGNALS)
def test_segmentation_evaluation_resumes_after_a_kill(tiny, sig, tmp_path):
    model = tmp_path / f"Killed{int(sig)}__P__3d_fullres"  # its own output folder per signal
    shutil.copytree(tiny.model, model)
    arguments = ["-d", str(DEMO_ID), "-f", "0", "--segmenter", str(model), "--methods", "zero,mean",
                 "--tile-step-size", "1", "--disable-tta"]
    out = bridge.segmentation_folders(tiny.raw_dir.name, 0).root / bridge.external_tag(model) / "val" / "2d_cpu"

    def finished():
        return sorted((out / "segmentations").rglob("[!.]*.nii.gz")) if out.is_dir() else []

    code, _ = interrupt_when([sys.executable, "-m", "codebrain_seg.cli.evaluate_segmentation", *arguments],
                             finished, sig, tmp_path / "log.txt")
    # Segmentation files share their names across scenario folders: keep them by path.
    done = {str(path.relative_to(out)): path.stat().st_mtime_ns for path in finished()}
    log = (tmp_path / "log.txt").read_text()
    assert code == (-signal.SIGKILL if sig == signal.SIGKILL else 130), log[-2000:]
    if sig == signal.SIGINT:
        assert "interrupted: finished work is kept" in log
    expected = len(tiny.split["val"]) * (1 + 4 * 2)  # full + 4 scenarios x (zero, mean)
    assert 1 <= len(done) < expected
    assert main(arguments) == 0
    after = finished()
    assert len(after) == expected
    assert {key: stamp for key, stamp in ((str(p.relative_to(out)), p.stat().st_mtime_ns) for p in after)
            if key in done} == done  # what was complete before the kill was reused, not redone
    assert not [p for p in out.rglob(".*") if p.is_file() and "tmp" in p.name]  # no temp file left behind
    table = read_json(out / "table.json")
    assert table["rows"] == ["zero-fill", "mean", "full"] and len(table["cases"]) == len(tiny.split["val"])
