"""Fixtures and markers of every test; the shared helpers are in tests/helpers/."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # make test runs one test process per core: each one's torch, and the scripts it starts,
    # get one thread. Two threads in each oversubscribe the cores: two resnet20 runs side by
    # side took 29 s with two threads each and 15 s with one.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

E2E = Path(__file__).resolve().parent / "e2e"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests under tests/e2e/ start the real scripts: marked e2e (make test-fast runs those
    also marked smoke)."""
    for item in items:
        if E2E in Path(item.fspath).parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
def tiny_args() -> list[str]:
    """A fast, CPU-only run: debug=fast on digits with an MLP."""
    return ["debug=fast", "device=cpu"]
