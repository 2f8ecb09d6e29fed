"""Splits with several cases per subject: a subject's cases always fall on the same side; brain splits unchanged."""
from __future__ import annotations

import pytest

from codebrain_seg.errors import InputError
from codebrain_seg.raw_dataset import subject_of_cases
from planners.plan_and_preprocess import make_splits

PATTERN = r"^(.+)_(?:ED|ES)$"


def test_frames_of_a_subject_stay_together():
    subjects = [f"patient{n:03d}" for n in range(11)]
    cases = [f"{s}_{p}" for s in subjects for p in ("ED", "ES")]
    grouping = subject_of_cases({"subject_pattern": PATTERN}, cases)
    splits = make_splits(cases, subjects=grouping)
    assert len(splits) == 5
    for fold in splits:
        assert sorted(fold["train"] + fold["val"]) == sorted(cases)
        train_subjects = {grouping[c] for c in fold["train"]}
        val_subjects = {grouping[c] for c in fold["val"]}
        assert not train_subjects & val_subjects
        assert all(f"{s}_ED" in fold["val"] and f"{s}_ES" in fold["val"] for s in val_subjects)
    # every subject is validated exactly once over the folds
    assert sorted(grouping[c] for fold in splits for c in fold["val"] if c.endswith("_ED")) == subjects


def test_without_a_rule_the_splits_are_nnunets():
    cases = [f"case{n:02d}" for n in range(7)]
    assert make_splits(cases, subjects=None) == make_splits(cases)
    assert subject_of_cases({}, cases) is None
    identity = subject_of_cases({"subject_pattern": PATTERN}, cases)  # no case matches: each its own subject
    assert make_splits(cases, subjects=identity) == make_splits(cases)


def test_bad_rules_are_user_errors():
    with pytest.raises(InputError, match="needs a group"):
        subject_of_cases({"subject_pattern": "_E[DS]$"}, ["a_ED"])
    with pytest.raises(InputError, match="not a regular expression"):
        subject_of_cases({"subject_pattern": "(("}, ["a_ED"])
    with pytest.raises(InputError, match="2 subjects"):
        make_splits(["a_ED", "a_ES"], subjects={"a_ED": "a", "a_ES": "a"})
