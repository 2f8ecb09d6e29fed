"""codebrain_seg/checkpoints.py: the one checkpoint loader and its errors."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from codebrain_seg.checkpoints import (
    CHECKPOINT_NAMES,
    CheckpointError,
    check_checkpoint_name,
    check_trained_configuration,
    load_checkpoint,
)
from codebrain_seg.errors import InputError, MissingFileError


@pytest.fixture
def good(tmp_path: Path) -> Path:
    path = tmp_path / "checkpoint_final.pth"
    torch.save({"method": "copedit", "stage": 2, "iteration": 7, "networks": {"dit": {"w": torch.arange(3.0)}},
                "configuration_name": "3d_copedit_cpu"}, path)
    return path


def test_a_good_checkpoint_loads_with_its_tensors(good: Path) -> None:
    state = load_checkpoint(good, expect={"method": "copedit", "stage": 2}, keys=("iteration", "networks.dit.w"))
    assert state["iteration"] == 7 and torch.equal(state["networks"]["dit"]["w"], torch.tensor([0.0, 1.0, 2.0]))
    assert state["networks"]["dit"]["w"].device.type == "cpu"


def test_missing_file_is_a_missing_file_error(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match=r"CodeBrain Stage II checkpoint .*nothing\.pth does not exist"):
        load_checkpoint(tmp_path / "nothing.pth", what="CodeBrain Stage II checkpoint")


def test_empty_and_truncated_files_are_checkpoint_errors_naming_the_file(good: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    for path in (empty, truncated):
        with pytest.raises(CheckpointError) as error:
            load_checkpoint(path)
        message = str(error.value)
        assert message.startswith(f"{path} cannot be read as a checkpoint (")
        assert "damaged or incomplete" in message and "\n" not in message
    assert issubclass(CheckpointError, InputError)


def test_a_file_without_a_dict_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tensor.pth"
    torch.save(torch.zeros(2), path)
    with pytest.raises(CheckpointError, match=r"tensor\.pth is not a checkpoint: it holds a Tensor, not a dict"):
        load_checkpoint(path)


def test_missing_keys_and_expected_values(good: Path) -> None:
    with pytest.raises(CheckpointError, match=r"checkpoint_final\.pth is not a Stage I checkpoint: it has no "
                                              r"'networks.generator'"):
        load_checkpoint(good, keys=("networks.generator",), what="Stage I checkpoint")
    with pytest.raises(CheckpointError, match=r"it has no 'ema'"):
        load_checkpoint(good, keys=("ema",))
    # the error shows what the file holds for the expected fields
    with pytest.raises(CheckpointError, match=r"is not a checkpoint \(method 'copedit', stage 2\)"):
        load_checkpoint(good, expect={"method": "copedit", "stage": 1})
    with pytest.raises(CheckpointError, match=r"checkpoint_final\.pth is not a checkpoint \(method 'copedit'\)$"):
        load_checkpoint(good, expect={"method": "codebrain"})


def test_checkpoint_names_and_trained_configuration(good: Path) -> None:
    assert CHECKPOINT_NAMES == ("final", "best", "latest")
    assert [check_checkpoint_name(n) for n in CHECKPOINT_NAMES] == list(CHECKPOINT_NAMES)
    with pytest.raises(InputError, match="checkpoint must be one of final, best, latest, got 'last'"):
        check_checkpoint_name("last")
    state = load_checkpoint(good)
    assert check_trained_configuration(state, good, None) == "3d_copedit_cpu"
    assert check_trained_configuration(state, good, "3d_copedit_cpu") == "3d_copedit_cpu"
    assert check_trained_configuration({}, good, "2d") == "2d"
    with pytest.raises(CheckpointError, match="was trained with configuration '3d_copedit_cpu', not '2d'"):
        check_trained_configuration(state, good, "2d")
