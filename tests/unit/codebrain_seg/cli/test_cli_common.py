"""codebrain_seg/cli/common.py run_cli: a user error is one line and exit code 2, a programming error keeps its
traceback, an interrupt exits 130."""
from __future__ import annotations

import pytest

from codebrain_seg.cli.common import run_cli
from codebrain_seg.errors import InputError, MissingFileError, UnknownNameError


def _raising(error: BaseException):
    def function() -> None:
        raise error
    return function


def test_success_is_exit_code_0(capsys: pytest.CaptureFixture) -> None:
    calls = []
    assert run_cli(lambda: calls.append("ran")) == 0
    assert calls == ["ran"] and capsys.readouterr().err == ""


@pytest.mark.parametrize("error, line", [
    (InputError("batch size must be positive, got -1"), "error: batch size must be positive, got -1"),
    (UnknownNameError("unknown method 'magic'; known: mean, zero"), "error: unknown method 'magic'; known: mean, zero"),
    (MissingFileError("/data/x does not exist"), "error: /data/x does not exist"),
    (FileNotFoundError(2, "No such file or directory", "/data/y"),
     "error: [Errno 2] No such file or directory: '/data/y'"),
    (PermissionError(13, "Permission denied", "/root/z"), "error: [Errno 13] Permission denied: '/root/z'"),
])
def test_user_error_is_one_line_and_exit_code_2(error: BaseException, line: str,
                                                capsys: pytest.CaptureFixture) -> None:
    assert run_cli(_raising(error)) == 2
    captured = capsys.readouterr()
    assert captured.err == line + "\n" and captured.out == ""


@pytest.mark.parametrize("error", [KeyError("plans"), TypeError("unsupported operand"), ValueError("a bug"),
                                   ZeroDivisionError("division by zero")])
def test_programming_error_propagates_with_its_traceback(error: BaseException,
                                                         capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(type(error)) as raised:
        run_cli(_raising(error))
    assert raised.value is error and raised.traceback[-1].name == "function"
    assert "error:" not in capsys.readouterr().err


def test_keyboard_interrupt_exits_130(capsys: pytest.CaptureFixture) -> None:
    assert run_cli(_raising(KeyboardInterrupt())) == 130
    assert capsys.readouterr().err == "interrupted: finished work is kept; rerun the same command to resume\n"
