"""codebrain_seg/errors.py: the user-error types and the builtins they also are."""
from __future__ import annotations

import pytest

from codebrain_seg import errors


@pytest.mark.parametrize("kind, builtin", [
    (errors.InputError, ValueError), (errors.MissingFileError, FileNotFoundError),
    (errors.ExistingFileError, FileExistsError), (errors.UnknownNameError, KeyError),
    (errors.EnvironmentSetupError, OSError),
])
def test_each_user_error_is_also_the_builtin_a_caller_expects(kind: type, builtin: type) -> None:
    assert issubclass(kind, errors.UserError) and issubclass(kind, builtin)
    with pytest.raises(builtin, match="^the message$"):
        raise kind("the message")


def test_messages_read_as_sentences_not_reprs() -> None:
    # KeyError alone would quote its message: str(KeyError("x")) == "'x'"
    assert str(errors.UnknownNameError("unknown method 'magic'")) == "unknown method 'magic'"
    assert str(KeyError("unknown method 'magic'")) == "\"unknown method 'magic'\""
    assert str(errors.InputError("bad value")) == "bad value"
    assert str(errors.UserError("a", "b")) == "('a', 'b')"
