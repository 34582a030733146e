"""Errors that are the user's to fix: reported as one line, exit status 2, nothing overwritten."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn


class UserError(Exception):
    """A bad setting or input; the message says what was wrong and what to do instead."""


class ConfigError(UserError):
    """An invalid configuration value."""


class CheckpointError(UserError):
    """A corrupt, unreadable or foreign checkpoint."""


def one_line(e: BaseException) -> str:
    """Why something stopped, in one line: a user error's message, else `Type: message`."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    if isinstance(e, UserError):
        return text
    return f"{type(e).__name__}: {text}"[:300] if text else type(e).__name__


DEBUG_ENV = "TRAINKIT_DEBUG"


def debugging() -> bool:
    """TRAINKIT_DEBUG=1: errors show their traceback (for developers)."""
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def fail(message: str) -> NoReturn:
    """Print one error line and exit with status 2."""
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(2)


def as_user_error(e: OSError) -> UserError:
    """A permission or disk problem as the user's to fix, naming the path."""
    where = e.filename or "a file"
    if isinstance(e, PermissionError):
        return UserError(f"cannot write {where} (permission denied): choose a writable folder "
                         f"(out_dir=, hydra.run.dir=) or fix its permissions")
    return UserError(f"cannot write {where} ({e.strerror or type(e).__name__}): free space or "
                     f"choose another folder")


def report_user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator for eval.py, plots.py and tune.py's sweeper: a UserError, or a folder it cannot
    write, becomes one line and exit status 2."""

    @functools.wraps(fn)
    def inner(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            if debugging():
                raise
            fail(str(e))
        except OSError as e:
            if debugging() or e.errno is None:
                raise
            fail(str(as_user_error(e)))

    return inner
