"""Fixtures of every test; the shared helpers are in tests/helpers/."""

from __future__ import annotations

import pytest


@pytest.fixture
def tiny_args() -> list[str]:
    """A fast, CPU-only run: debug=fast on digits with an MLP."""
    return ["debug=fast", "device=cpu"]
