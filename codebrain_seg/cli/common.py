"""What every command-line entry point shares: logging setup and turning user errors into one clear line."""
from __future__ import annotations

import logging
import sys
from typing import Callable

from codebrain_seg.errors import UserError

# A user's mistake or setup problem: one line and exit code 2, without a traceback. The operating system's file
# errors name the path (a folder that does not exist, no permission to write). Any other exception is a
# programming error and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (UserError, FileNotFoundError, FileExistsError, PermissionError,
                                                IsADirectoryError, NotADirectoryError)


def run_cli(function: Callable[[], object]) -> int:
    """Call ``function``; a user error becomes ``error: ...`` on stderr and exit code 2."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        function()
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Every stage writes atomically and skips finished work, so the same command resumes.
        print("interrupted: finished work is kept; rerun the same command to resume", file=sys.stderr)
        return 130
    return 0
