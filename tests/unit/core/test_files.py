"""The facts many files share, kept in one place, and checked against what they describe."""

from __future__ import annotations

import os

import pytest

from src.core.files import CONF, GROUPS, check_writable
from src.core.keys import flatten, metric_prefix, split_metrics, worst_objective


def test_the_config_groups_are_the_folders_of_conf_but_hydra_trainer_and_logger():
    folders = {p.name for p in CONF.iterdir() if p.is_dir()}
    # logger decides where the numbers go, not what they are: no run is compared by it
    assert set(GROUPS) == folders - {"hydra", "trainer", "logger"}
    assert len(GROUPS) == len(set(GROUPS))


def test_metric_keys_follow_one_grammar():
    assert metric_prefix("model") == "" and metric_prefix("ema_0.9") == "ema_0.9/"
    keys = split_metrics(["model", "ema_0.9"])
    assert {"val_acc", "best/test_loss", "ema_0.9/train_acc", "ema_0.9/best/val_loss"} <= set(keys)
    assert worst_objective("val_acc") == 0.0 and worst_objective("val_loss") == float("inf")


def test_flatten_joins_nested_keys_with_dots_and_keeps_lists_whole():
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": None}) == {
        "a.b": 1, "a.c.d": [1, 2], "e": None}


def test_check_writable_tries_for_real(tmp_path):
    check_writable(tmp_path / "out.json")
    assert list(tmp_path.iterdir()) == []  # the probe leaves nothing
    (tmp_path / "dir").mkdir()
    with pytest.raises(IsADirectoryError):
        check_writable(tmp_path / "dir")
    with pytest.raises(FileNotFoundError):
        check_writable(tmp_path / "missing" / "out.json")
    if os.getuid() != 0:  # root writes anywhere: tests/e2e/test_errors.py mounts read-only
        (tmp_path / "ro").mkdir(mode=0o500)
        with pytest.raises(PermissionError):
            check_writable(tmp_path / "ro" / "out.json")
