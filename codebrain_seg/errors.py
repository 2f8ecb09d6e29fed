"""The user-error types: mistakes in a user's input or setup, which the commands report as one line (exit code 2).

Every other exception is a programming error and keeps its traceback (``codebrain_seg.cli.common.run_cli``).
Each type also derives from the builtin a caller would expect (``ValueError``, ``FileNotFoundError``,
``KeyError``), so ``except ValueError`` around the Python API keeps working.
"""
from __future__ import annotations


class UserError(Exception):
    """A problem in the user's input, data or setup; the message names the file, case or field and what to do."""

    def __str__(self) -> str:
        # KeyError quotes its message; a user reads the sentence, not its repr.
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


class InputError(UserError, ValueError):
    """A value, option or file content that cannot be used."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder that a step needs does not exist (the message says which command makes it)."""


class ExistingFileError(UserError, FileExistsError):
    """A target exists and would be overwritten."""


class UnknownNameError(UserError, KeyError, ValueError):
    """A name (method, configuration, dataset) that is not registered; the message lists the known ones (a
    ``KeyError`` for lookups, a ``ValueError`` for the arguments that named it)."""


class EnvironmentSetupError(UserError, OSError):
    """The machine or environment lacks what was asked for (a GPU, an environment variable)."""


class TrainingDivergedError(UserError, RuntimeError):
    """Training produced non-finite gradients step after step (the message names the network, iteration and
    precision, and what to try); the last good checkpoint is kept, so ``--continue`` can resume from it."""
