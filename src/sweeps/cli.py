"""Command-line plumbing shared by the entry points: resolvers, override checks, error reporting."""

from __future__ import annotations

import functools
import hashlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from src.errors import UserError

# Keys whose values are paths or globs. A run directory's name holds '=' and ',', which Hydra's
# grammar reads as syntax: such a value is quoted for Hydra before it parses the command line,
# so `runs=outputs/runs/optimizer=sgd*` works as typed.
PATH_KEYS = ("runs", "checkpoint", "out_dir", "data_dir", "pruning.from_run", "hydra.run.dir",
             "hydra.sweep.dir", "hydra.sweeper.storage")


def quote_paths(args: Sequence[str]) -> list[str]:
    """The command line with every path value that holds '=' quoted for Hydra."""
    out = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if (sep and key.lstrip("+") in PATH_KEYS and "=" in value
                and value[:1] not in ("'", '"')):
            value = "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
            arg = f"{key}={value}"
        out.append(arg)
    return out


def run_name(override_dirname: str) -> str:
    """A run directory name from Hydra's sorted 'key=value,...' overrides ('default' if none).

    Quotes (of a path value holding '=') are left out: the name stays one a shell accepts.
    """
    if not override_dirname:
        return "default"
    name = override_dirname.replace("/", "_").replace("'", "").replace('"', "")
    if len(name) > 150:  # file names stop at 255 bytes; keep it readable and unique
        name = name[:120] + "-" + hashlib.sha1(name.encode()).hexdigest()[:12]
    return name


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("run_name"):
        OmegaConf.register_new_resolver("run_name", run_name)


def check_overrides(args: Sequence[str], conf_dir: Path) -> None:
    """Exit with one line if an override picks an option that a config group does not have.

    Hydra's own message spans a dozen lines; this one names the group and its options.
    """
    dirs = [conf_dir] + [Path(v) for v in _option_values(args, ("--config-dir", "-cd"))]
    for arg in args:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        group = key.lstrip("+~").split("@", 1)[0]
        folder = conf_dir / group
        if group.startswith("hydra") or not folder.is_dir() or "(" in value:
            continue
        options = sorted({p.stem for d in dirs for p in (d / group).glob("*.yaml")})
        for choice in value.split(","):
            if choice not in options and choice != "null":
                fail(f"unknown {group} '{choice}': choose one of {', '.join(options)} "
                     f"(files in conf/{group}/)")


def _option_values(args: Sequence[str], names: tuple[str, ...]) -> list[str]:
    """Values of command-line options given as `--name value` or `--name=value`."""
    values = []
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                values.append(args[i + 1])
            elif arg.startswith(name + "="):
                values.append(arg.split("=", 1)[1])
    return values


def fail(message: str) -> None:
    """Print one error line and exit with status 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def report_user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator for eval.py and plots.py: a UserError becomes one line and exit status 2."""

    @functools.wraps(fn)
    def inner(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            fail(str(e))

    return inner
