"""Command-line plumbing shared by the entry points: resolvers, the checks of a command line
before Hydra runs it, and error reporting (one line, exit status 2; TRAINKIT_DEBUG=1 shows the
traceback instead)."""

from __future__ import annotations

import difflib
import hashlib
import re
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from src.core.errors import debugging, fail
from src.core.files import CHECKPOINT, SUMMARY

# Command-line options of Hydra that take a value, and those that end the command's work early.
VALUE_OPTIONS = ("--config-dir", "-cd", "--config-path", "-cp", "--config-name", "-cn",
                 "--experimental-rerun")
EARLY_OPTIONS = ("--help", "-h", "--hydra-help", "--info", "-i", "--cfg", "-c", "--package",
                 "-p", "--resolve", "--shell-completion", "-sc", "--version")

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
        listed = value.startswith("[") and value.endswith("]")  # several options: logger=[a,b]
        for choice in (value[1:-1] if listed else value).split(","):
            choice = choice.strip()
            if choice not in options and choice != "null" and not (listed and not choice):
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


def hydra_overrides(args: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
    """(overrides with each sweep replaced by one of its values, extra config dirs, the sweep
    overrides as typed) of a command line: what Hydra will compose for the first job."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import Glob, IntervalSweep
    from hydra.errors import OverrideParseException

    dirs = [str(Path(v).resolve()) for v in _option_values(args, ("--config-dir", "-cd"))]
    plain = []
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg.startswith("-"):
            skip = arg in VALUE_OPTIONS
            continue
        plain.append(arg)
    parser = OverridesParser.create()
    single, sweeps = [], []
    for arg in plain:
        try:
            (override,) = parser.parse_overrides([arg])
        except OverrideParseException as e:
            detail = str(e).splitlines()[1] if len(str(e).splitlines()) > 1 else str(e)
            fail(f"cannot read {arg!r} ({detail.strip()[:120]}): quote a value that holds "
                 f"spaces, brackets or '=' (key='value')")
        if not override.is_sweep_override():
            single.append(arg)
            continue
        sweeps.append(arg)
        key = arg.split("=", 1)[0]
        value = override.value()
        if isinstance(value, IntervalSweep):
            single.append(f"{key}={value.start}")
        elif isinstance(value, Glob):
            continue
        else:
            single.append(f"{key}={next(iter(override.sweep_string_iterator()))}")
    return single, dirs, sweeps


def check_command(args: Sequence[str], conf_dir: Path, config_name: str) -> DictConfig | None:
    """Compose the config a command line asks for before Hydra runs it, and turn what Hydra
    would report in many lines (a typo'd key, an unknown option of a Hydra group, a folder it
    cannot write) into one. Returns the composed config (None for --help and friends)."""
    if any(a.split("=")[0] in EARLY_OPTIONS for a in args):
        return None
    from hydra import compose, initialize_config_dir
    from hydra.errors import (
        ConfigCompositionException,
        MissingConfigException,
        OverrideParseException,
    )
    from hydra.types import RunMode

    overrides, dirs, sweeps = hydra_overrides(args)
    if dirs:
        overrides.append(f"hydra.searchpath=[{','.join('file://' + d for d in dirs)}]")
    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
            multirun = "-m" in args or "--multirun" in args or cfg.hydra.mode == RunMode.MULTIRUN
            if sweeps and not multirun:
                fail(f"{sweeps[0]} lists several values, which needs a sweep: add -m "
                     f"(--multirun) to run one job per value, or give one value")
            writable_output(cfg, multirun)
    except MissingConfigException as e:
        fail(missing_option(str(e)))
    except ConfigCompositionException as e:
        fail(unknown_key(str(e), base_keys(conf_dir, config_name)))
    except OverrideParseException as e:
        fail(str(e).splitlines()[0])
    return cfg


def missing_option(message: str) -> str:
    """Hydra's 'Could not find group/option ... Available options' as one line."""
    found = re.search(r"Could not find '([^']+)/([^'/]+)'", message)
    options = re.findall(r"^\t(\S+)$", message.split("Config search path")[0], re.M)
    if not found:
        return message.splitlines()[0]
    group, option = found.groups()
    return f"unknown {group} '{option}': choose one of {', '.join(options) or '(none)'}"


def base_keys(conf_dir: Path, config_name: str) -> list[str]:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        cfg = compose(config_name)
    return list(flat_keys(OmegaConf.to_container(cfg)))


def flat_keys(tree: Any, prefix: str = "") -> list[str]:
    if not isinstance(tree, dict):
        return [prefix[:-1]]
    return [k for key, value in tree.items() for k in flat_keys(value, f"{prefix}{key}.")]


def unknown_key(message: str, keys: list[str]) -> str:
    """Hydra's 'Could not override x' (a typo, most often) as one line naming the closest key."""
    found = re.search(r"Could not (?:override|append to) '([^']+)'", message)
    if not found:
        return message.splitlines()[0]
    key = found.group(1)
    close = difflib.get_close_matches(key, keys, n=2, cutoff=0.6)
    if not close:  # a mistyped first part: compare the last part alone
        leaves = {k.split(".")[-1]: k for k in keys}
        close = [leaves[m] for m in difflib.get_close_matches(key.split(".")[-1], leaves, n=2)]
    hint = f"did you mean {' or '.join(close)}?" if close else "no setting is close to it;"
    return (f"{key} is not a setting: {hint} (--cfg job prints every setting; +{key}=... adds "
            f"a new one)")


def writable_output(cfg: DictConfig, multirun: bool) -> None:
    """The run (or sweep) directory must lie in a folder this process can write: tried for
    real (a permission check says nothing for root, or on a read-only mount)."""
    from hydra.core.hydra_config import HydraConfig

    HydraConfig.instance().set_config(cfg)
    if cfg.hydra.output_subdir is None and OmegaConf.to_container(cfg.hydra.run)["dir"] == ".":
        return  # eval.py and plots.py write where their own keys say
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    try:
        target = Path(str(OmegaConf.select(cfg, key)))
    except Exception:  # an interpolation only the sweeper resolves (tune.py's study name)
        raw = str(OmegaConf.to_container(cfg.hydra)[key.split(".")[1]]["dir"])
        target = Path(raw.split("${")[0] or ".")
    folder = target
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        Path(tempfile.mkdtemp(prefix=".trainkit-probe-", dir=folder)).rmdir()
    except OSError as e:
        fail(f"cannot write in {folder} ({e.strerror}) to make {target}: pass "
             f"{key}=<a writable folder>, or fix its permissions")


def run_entry_point(main: Callable[[], Any], conf_dir: Path, config_name: str,
                    help_text: Callable[[], str] | None = None) -> None:
    """What every script does: take path values as typed, answer --help, check the command
    line, run Hydra, and end with one line on Ctrl-C or the sweep's exit status."""
    from src.sweeps.report import exit_status
    from src.sweeps.slurm import hide_schema_warning

    hide_schema_warning()
    sys.argv[1:] = quote_paths(sys.argv[1:])
    args = sys.argv[1:]
    if help_text is not None and any(a in ("--help", "-h") for a in args):
        print(help_text())
        sys.exit(0)
    check_overrides(args, conf_dir)
    check_command(args, conf_dir, config_name)
    try:
        main()
    except KeyboardInterrupt:
        if debugging():
            raise
        print(interrupted(), file=sys.stderr)
        sys.exit(130)
    sys.exit(exit_status())


def interrupted() -> str:
    """The one line of a Ctrl-C during a job: what the run directory kept, and what next."""
    from src.cli import job

    run = job.current_run_dir
    if run is not None and (run / CHECKPOINT).exists():
        return (f"interrupted: the run in {run} is recorded as interrupted and keeps its last "
                f"checkpoint; run the same command again to resume it")
    if run is not None and (run / SUMMARY).exists():
        return (f"interrupted: the run in {run} is recorded as interrupted before its first "
                f"checkpoint; run the same command again to start it")
    where = f" in {run}" if run is not None else ""
    return (f"interrupted before the run{where} had trained: nothing was kept; run the same "
            f"command again to start it")
