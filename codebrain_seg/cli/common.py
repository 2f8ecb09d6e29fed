"""What every command-line entry point shares: logging setup and turning user errors into one clear line."""
from __future__ import annotations

import logging
import sys
from typing import Callable

# Errors caused by the user's input or setup: reported as one line and exit code 2, without a traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, KeyError, LookupError, FileNotFoundError,
                                                FileExistsError, EnvironmentError, TypeError)


def run_cli(function: Callable[[], object]) -> int:
    """Call ``function``; a user error becomes ``error: ...`` on stderr and exit code 2."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        function()
    except USER_ERRORS as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Every stage writes atomically and skips finished work, so the same command resumes.
        print("interrupted: finished work is kept; rerun the same command to resume", file=sys.stderr)
        return 130
    return 0
