"""Fixtures and markers of every test; the shared helpers are in tests/helpers/."""

from __future__ import annotations

from pathlib import Path

import pytest

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
