"""Command-line plumbing shared by the entry points: resolvers, the checks of a command line
before Hydra runs it, and error reporting (one line, exit status 2; TRAINKIT_DEBUG=1 shows the
traceback instead)."""

from __future__ import annotations

import difflib
import hashlib
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from src.cli import outputs
from src.cli.names import REMOVED, foreign, instead
from src.core.errors import UserError, debugging, fail
from src.core.files import CHECKPOINT, SUMMARY

# Command-line options of Hydra that take a value, and those that end the command's work early.
VALUE_OPTIONS = ("--config-dir", "-cd", "--config-path", "-cp", "--config-name", "-cn",
                 "--experimental-rerun")
EARLY_OPTIONS = ("--help", "-h", "--hydra-help", "--info", "-i", "--cfg", "-c", "--package",
                 "-p", "--resolve", "--shell-completion", "-sc", "--version")
HYDRA_OPTIONS = (*VALUE_OPTIONS, *EARLY_OPTIONS, "--multirun", "-m", "--run", "-r")
# Settings whose default is true or false and that also take words (trainer.compile: a mode).
ALSO_WORDS = ("trainer.compile",)

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


def check_names(args: Sequence[str]) -> None:
    """Exit with one line for an argparse flag (`--lr 0.1`), a name from the code bases our
    users come from (`global_seed=1`) or a removed setting, saying what to type here."""
    skip = False
    for i, arg in enumerate(args):
        if skip:
            skip = False
            continue
        name, sep, value = arg.partition("=")
        if arg.startswith("-"):
            if name in HYDRA_OPTIONS:
                skip = name in VALUE_OPTIONS and not sep
                continue
            if not sep and i + 1 < len(args) and not args[i + 1].startswith("-") \
                    and "=" not in args[i + 1]:
                value = args[i + 1]
            known = foreign(name)
            if known is not None:
                fail(f"{name} is an option of {known.study}: here type "
                     f"{instead(known, value)}")
            fail(f"{name} is not an option: settings are key=value (e.g. optimizer.lr=0.1); "
                 f"--help lists them")
        key = name.lstrip("+~")
        if not sep:
            continue
        if key in REMOVED:
            fail(f"{key} was removed: use {REMOVED[key]}")
        known = foreign(key)
        if known is not None:
            fail(f"{key} is the name used by {known.study}: here type {instead(known, value)}")


def check_overrides(args: Sequence[str], conf_dir: Path) -> None:
    """Exit with one line if an override picks an option that a config group does not have.

    Hydra's own message spans a dozen lines; this one names the group and its options.
    """
    dirs = [conf_dir, *config_dirs(args)]
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


def config_dirs(args: Sequence[str]) -> list[Path]:
    """The user's config folders: --config-dir, and the file:// entries of a
    hydra.searchpath=[...] override (what Hydra searches beside conf/)."""
    dirs = [Path(v) for v in _option_values(args, ("--config-dir", "-cd"))]
    for arg in args:
        key, _, value = arg.partition("=")
        if key.lstrip("+") == "hydra.searchpath":
            dirs += [Path(entry.strip().strip("'\"")[len("file://"):])
                     for entry in value.strip("[]").split(",")
                     if entry.strip().strip("'\"").startswith("file://")]
    return dirs


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
            swept = {s.split("=", 1)[0] for s in sweeps}
            check_types([*(o for o in overrides if o.split("=", 1)[0] not in swept), *sweeps],
                        overrides, conf_dir, config_name)
            if multirun:
                check_sweep_base(overrides, swept, conf_dir, config_name)
                check_launcher(cfg)
            outputs.writable_output(cfg, multirun)
    except MissingConfigException as e:
        fail(missing_option(str(e)))
    except ConfigCompositionException as e:
        fail(unknown_key(str(e), args, conf_dir, config_name))
    except OverrideParseException as e:
        fail(str(e).splitlines()[0])
    return cfg


def check_sweep_base(overrides: Sequence[str], swept: set[str], conf_dir: Path,
                     config_name: str) -> None:
    """Hydra composes a sweep's own config with the groups' defaults before it picks each
    job's options: a setting that only a swept option has (model.name with
    model=timm,torchvision) is told to be written ++model.name=..."""
    from hydra import compose
    from hydra.errors import ConfigCompositionException

    groups = {k for k in swept if is_group(k, conf_dir)}
    if not groups:
        return
    try:
        compose(config_name, overrides=[o for o in overrides if o.split("=", 1)[0] not in groups],
                return_hydra_config=True)
    except ConfigCompositionException as e:
        match = re.search(r"Could not override '([^']+)'", str(e))
        group = match.group(1).split(".")[0] if match else ""
        if match is None or group not in groups:
            raise
        arg = next(o for o in overrides if o.split("=", 1)[0] == match.group(1))
        fail(f"{arg}: Hydra composes a sweep over {group}= with the default {group} first, "
             f"which has no {match.group(1)}: write ++{arg}")


def check_launcher(cfg: DictConfig) -> None:
    """A launcher that declares `check_settings` checks hydra.launcher.* before Hydra makes
    the sweep's folder (hydra.launcher.slots=0 is one line, and nothing is written)."""
    from hydra.utils import get_class

    try:
        launcher = get_class(cfg.hydra.launcher._target_)
    except Exception:  # not importable here: Hydra reports it as it starts the sweep
        return
    check = getattr(launcher, "check_settings", None)
    if check is not None:
        try:
            check(cfg.hydra.launcher)
        except UserError as e:
            fail(str(e))


def is_group(key: str, conf_dir: Path) -> bool:
    """`key` picks an option of a config group (model=..., hydra/launcher=...)."""
    key = key.lstrip("+~").split("@", 1)[0]
    return "/" in key or (conf_dir / key).is_dir()


def check_types(overrides: Sequence[str], composed: Sequence[str], conf_dir: Path,
                config_name: str) -> None:
    """Exit with one line when a value's type is not its setting's: a word where a number
    goes (optimizer.lr=0.1O), a number where a list goes (averaging.decays=0.99), ... Each
    value of a sweep (`overrides`, as typed) is checked, against the defaults of the groups
    that `composed` (the overrides of the first job, and the config folders) picks."""
    from hydra import compose
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep, Glob

    values = [a for a in overrides if "=" in a and not a.startswith(("+", "~"))
              and not is_group(a.split("=", 1)[0], conf_dir)
              and not a.startswith("hydra.searchpath=")]
    if not values:
        return
    groups = [a for a in composed if "=" in a and (is_group(a.split("=", 1)[0], conf_dir)
                                                    or a.startswith("hydra.searchpath="))]
    base = compose(config_name, overrides=groups, return_hydra_config=True)
    parser = OverridesParser.create()
    for arg in values:
        (override,) = parser.parse_overrides([arg])
        key, typed = arg.split("=", 1)
        value = override.value()
        if isinstance(value, Glob):
            continue
        choices = value.list if isinstance(value, ChoiceSweep) else (
            [value] if not override.is_sweep_override() else [])
        try:
            default = OmegaConf.select(base, key, throw_on_missing=False)
        except Exception:  # an interpolation only a running job resolves
            continue
        if isinstance(default, ListConfig) and len(choices) > 1 and not any(
                isinstance(c, list) for c in choices):
            fail(f"{key}={typed} sweeps single values, but each value is a list: write "
                 f"{key}={','.join(f'[{c}]' for c in choices)}")
        for choice in choices:
            why = wrong_type(key, choice, default)
            if why:
                fail(f"{key}={typed}: {choice} {why}" if len(choices) > 1 else
                     f"{key}={typed} {why}")


def wrong_type(key: str, value: Any, default: Any) -> str | None:
    """Why `value` cannot be the setting `key` whose default is `default`, or None."""
    def number(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool)

    if value is None or default is None or (isinstance(value, str) and "${" in value):
        return None
    if isinstance(default, bool):
        if not isinstance(value, bool) and key not in ALSO_WORDS:
            return f"is not true or false: type {key}=true or {key}=false"
    elif number(default):
        if not number(value):
            return f"is not a number: type a number, e.g. {key}={default}"
    elif isinstance(default, ListConfig):
        if not isinstance(value, list):
            return f"is a list setting: write {key}=[{value}]"
        if len(default) and all(number(v) for v in default) and not all(number(v) for v in value):
            bad = next(v for v in value if not number(v))
            return f"holds {bad!r}, which is not a number: type numbers, e.g. " \
                   f"{key}=[{','.join(map(str, default))}]"
    elif isinstance(default, DictConfig) and not isinstance(value, dict):
        inner = next(iter(default), "<key>")
        return f"is a group of settings, not a value: set one of them, e.g. {key}.{inner}=..."
    return None


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


def group_options(conf_dir: Path) -> dict[str, list[str]]:
    """Every config group of conf/ (hydra's own too: hydra/launcher) and its options."""
    return {str(d.relative_to(conf_dir)): sorted(p.stem for p in d.glob("*.yaml"))
            for d in sorted(conf_dir.rglob("*")) if d.is_dir() and any(d.glob("*.yaml"))}


def unknown_key(message: str, args: Sequence[str], conf_dir: Path, config_name: str) -> str:
    """Hydra's 'Could not override x' (a typo, most often) as one line naming the closest
    settings and groups: `optimiser=adam` suggests optimizer=adam, `epchs=5` epochs=5."""
    found = re.search(r"Could not (?:override|append to) '([^']+)'", message)
    if not found:
        return message.splitlines()[0]
    key = found.group(1)
    value = next((a.split("=", 1)[1] for a in args if a.lstrip("+~").split("=", 1)[0] == key),
                 None)
    close = closest(key, value, base_keys(conf_dir, config_name), group_options(conf_dir))
    hint = f"did you mean {' or '.join(close)}?" if close else "no setting is close to it;"
    return (f"{key} is not a setting: {hint} (--cfg job prints every setting; +{key}=... adds "
            f"a new one)")


def closest(key: str, value: str | None, keys: list[str],
            groups: dict[str, list[str]]) -> list[str]:
    """Up to two settings or group choices nearest to `key`, best first, as they would be
    typed: a group as group=option, a setting as the key alone."""
    def ratio(a: str, b: str) -> float:
        return difflib.SequenceMatcher(None, a, b).ratio()

    scored: list[tuple[float, str]] = []
    for group, options in groups.items():
        if group.startswith("hydra/") and not key.startswith("hydra"):
            continue
        option = value if value in options else "<" + "|".join(options[:4]) + \
            ("|...>" if len(options) > 4 else ">")
        scored.append((ratio(key, group), f"{group}={option}"))
    leaf = key.split(".")[-1]
    for k in keys:
        if k.endswith(("_target_", "_partial_")):  # what builds a group's object, not a setting
            continue
        scored.append((max(ratio(key, k), 0.95 * ratio(leaf, k.split(".")[-1])), k))
    scored.sort(key=lambda s: -s[0])
    return [name for score, name in scored[:2] if score >= 0.6][:2] if scored else []


def run_entry_point(main: Callable[[], Any], conf_dir: Path, config_name: str,
                    help_text: Callable[[Sequence[Path]], str] | None = None) -> None:
    """What every script does: take path values as typed, answer --help, check the command
    line, run Hydra, and end with one line on Ctrl-C or the sweep's exit status."""
    from src.sweeps.report import exit_status
    from src.sweeps.slurm import hide_schema_warning

    hide_schema_warning()
    sys.argv[1:] = quote_paths(sys.argv[1:])
    args = sys.argv[1:]
    if help_text is not None and any(a in ("--help", "-h") for a in args):
        print(help_text(config_dirs(args)))
        sys.exit(0)
    check_names(args)
    check_overrides(args, conf_dir)
    check_command(args, conf_dir, config_name)
    try:
        main()
    except UserError as e:  # a sweeper's or launcher's own check, after Hydra started
        if debugging():
            raise
        fail(str(e))
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
