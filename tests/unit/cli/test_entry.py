"""The command line before Hydra runs it, in process: path values quoted, run names, and the
mistakes turned into one line (a sweep without -m, a typo'd key, an unknown option)."""

from __future__ import annotations

import pytest

from src.cli.entry import check_command, hydra_overrides, quote_paths, run_name
from src.cli.help import eval_help, plots_help, train_help, tune_help
from src.core.files import CONF, GROUPS


def one_line_exit(capsys: pytest.CaptureFixture, args: list[str], config: str = "train") -> str:
    with pytest.raises(SystemExit) as stop:
        check_command(args, CONF, config)
    assert stop.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    return line


def test_a_path_holding_equals_signs_is_quoted_for_hydra():
    assert quote_paths(["runs=outputs/runs/optimizer=sgd*", "seed=1"]) == [
        "runs='outputs/runs/optimizer=sgd*'", "seed=1"]
    assert quote_paths(["checkpoint='a=b'"]) == ["checkpoint='a=b'"]  # already quoted


def test_run_names_are_shell_friendly_and_bounded():
    assert run_name("") == "default"
    assert run_name("model=resnet20,optimizer.lr=0.1") == "model=resnet20,optimizer.lr=0.1"
    assert "/" not in run_name("runs=a/b")
    assert len(run_name("x=" + "y" * 400)) <= 150


def test_a_sweep_is_composed_at_its_first_value():
    single, dirs, sweeps = hydra_overrides(["seed=1,2", "optimizer.lr=interval(0.1,1)", "-m",
                                            "epochs=3"])
    assert single == ["seed=1", "optimizer.lr=0.1", "epochs=3"] and dirs == []
    assert sweeps == ["seed=1,2", "optimizer.lr=interval(0.1,1)"]


def test_several_values_without_multirun_is_one_line(capsys):
    line = one_line_exit(capsys, ["optimizer.lr=0.1,0.2"])
    assert line.startswith("error: optimizer.lr=0.1,0.2 lists several values") and "-m" in line
    assert check_command(["-m", "optimizer.lr=0.1,0.2"], CONF, "train") is not None
    assert check_command(["optimizer.lr=interval(0.001,1)"], CONF, "tune") is not None


@pytest.mark.parametrize(("args", "says"), [
    (["epchs=5"], "did you mean epochs?"),
    (["model=resnet21"], "unknown model 'resnet21'"),
    (["hydra.run.dir=/proc/trainkit"], "cannot write in /proc"),
])
def test_what_hydra_says_in_many_lines_is_one(capsys, args, says):
    assert says in one_line_exit(capsys, args)


def test_each_help_lists_its_keys_and_train_lists_every_group():
    text = train_help()
    assert all(f"  {group} " in text for group in GROUPS)
    for helper, key in ((tune_help, "objective"), (plots_help, "figure"), (eval_help, "out")):
        assert f"  {key} " in helper()
