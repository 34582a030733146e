"""The documentation: a README that fits a first screen and links to a page per topic, links that
stay inside the repository and point at files that exist, and the table of names our users bring
from the five code bases kept equal to the one the command line answers from."""

from __future__ import annotations

import re

from src.cli.names import FOREIGN, REMOVED, instead
from tests.helpers.docs import pages
from tests.helpers.runs import ROOT

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def test_the_readme_is_a_front_door_of_at_most_200_lines_linking_every_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    for must in ("make train", "make test", "--multirun", "tune.py", "plots.py", "outputs/runs",
                 "| logger |", "| hydra/launcher |"):
        assert must in readme, must
    linked = {p.name for p in pages()[1:]}
    assert linked == {p.name for p in (ROOT / "docs").glob("*.md")}  # no page unlisted


def test_every_link_stays_in_the_repository_and_points_at_a_file():
    for page in pages():
        for target in LINK.findall(page.read_text()):
            assert "://" not in target and not target.startswith("/"), (page.name, target)
            path = (page.parent / target.split("#")[0]).resolve()
            assert ROOT.resolve() in path.parents, (page.name, target)
            assert path.exists(), (page.name, target)


def test_the_migration_pages_names_table_is_the_command_lines():
    text = (ROOT / "docs" / "migrating.md").read_text()
    table = text.split("<!-- names table")[1].split("<!-- end of names table")[0]
    rows = [[cell.strip().strip("`") for cell in line.strip("|").split("|")]
            for line in table.splitlines() if line.startswith("| `")]
    assert rows == [*([n.theirs, instead(n, None), n.study] for n in FOREIGN),
                    *([key, replacement] for key, replacement in REMOVED.items())]
