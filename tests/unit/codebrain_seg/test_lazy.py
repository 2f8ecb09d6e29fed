"""codebrain_seg/lazy.py and what it buys: the imputation command starts without CoPeDiT's networks or a trainer."""
from __future__ import annotations

import subprocess
import sys

import pytest

from codebrain_seg.lazy import Lazy
from codebrain_seg.run.methods import METHODS


def test_lazy_imports_on_the_first_call_and_forwards_it() -> None:
    join = Lazy("os.path:join")
    assert join._value is None and join("a", "b") == "a/b"
    import os.path

    assert join.resolve() is os.path.join and repr(join) == "Lazy('os.path:join')"
    with pytest.raises(ValueError, match="module:attribute"):
        Lazy("os.path.join")
    with pytest.raises(AttributeError):
        Lazy("os.path:no_such_function").resolve()


def test_registry_entries_resolve_to_the_classes() -> None:
    from trainers.stage1 import CodeBrainStageOneTrainer

    assert METHODS["codebrain"].stages[1].resolve() is CodeBrainStageOneTrainer
    assert METHODS["copedit"].imputer.resolve().__name__ == "CoPeDiTImputer"


def test_the_impute_command_imports_neither_monai_nor_the_trainers() -> None:
    probe = ("import sys, codebrain_seg.cli.impute, codebrain_seg.inference.codebrain; "
             "print(sorted(m for m in ('monai', 'trainers.base_trainer', 'batchgenerators', "
             "'codebrain_seg.networks.copedit.copevae') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
