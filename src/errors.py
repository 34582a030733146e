"""Errors that are the user's to fix: reported as one line, exit status 2, nothing overwritten."""


class UserError(Exception):
    """A bad setting or input; the message says what was wrong and what to do instead."""


class ConfigError(UserError):
    """An invalid configuration value."""


class CheckpointError(UserError):
    """A corrupt, unreadable or foreign checkpoint."""
