"""Errors that are the user's to fix: reported as one line, exit status 2, nothing overwritten."""


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
