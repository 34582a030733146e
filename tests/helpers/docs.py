"""The documentation a user reads: README.md, then the pages of docs/ in the order README's
table of pages lists them (the order their commands are run in by make test-readme)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.helpers.runs import ROOT


def pages() -> list[Path]:
    listed = re.findall(r"\]\((docs/[\w.]+\.md)\)", (ROOT / "README.md").read_text())
    return [ROOT / "README.md", *(ROOT / p for p in dict.fromkeys(listed))]
