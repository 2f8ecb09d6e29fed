"""codebrain_seg/run/methods.py: the one method registry."""
from __future__ import annotations

from codebrain_seg.run.methods import METHODS


def test_codebrain_is_registered_lazily():
    assert METHODS["codebrain"].trainable and METHODS["codebrain"].folder_name == "CodeBrain"
    assert callable(METHODS["codebrain"].imputer)
