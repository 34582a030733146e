"""Checkpoint files: an interrupted write leaves the old file and no temporary one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


def test_an_interrupted_checkpoint_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    from src.lifecycle.checkpoint import save_atomic

    def interrupted(obj, f):
        Path(f).write_bytes(b"half")
        raise KeyboardInterrupt

    (tmp_path / "checkpoint.pt").write_bytes(b"old")
    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_atomic({}, tmp_path / "checkpoint.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]
    assert (tmp_path / "checkpoint.pt").read_bytes() == b"old"
