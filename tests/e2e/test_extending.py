"""docs/extending.md as a user follows it: its files written, exactly as shown, into a project
folder beside a scratch copy of trainkit, and its commands run as typed; then the ways it goes
wrong (the package not on PYTHONPATH, a figure path that does not import)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.helpers.runs import ROOT

PAGE = ROOT / "docs" / "extending.md"
LINKED = ("train.py", "tune.py", "eval.py", "plots.py", "conf", "src", "hydra_plugins", ".venv")


def blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", PAGE.read_text(), flags=re.S)


def commands() -> list[str]:
    return [line for block in blocks("bash") for line in block.splitlines()
            if line.strip() and not line.startswith("#")]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """<tmp>/trainkit (the code, linked) and <tmp>/myproject (the page's files)."""
    top = tmp_path_factory.mktemp("extending")
    work = top / "trainkit"
    work.mkdir()
    for name in LINKED:
        (work / name).symlink_to(ROOT / name)
    written = []
    for block in blocks("python") + blocks("yaml"):
        header = block.splitlines()[0]
        assert header.startswith("# myproject/"), header
        path = top / header[2:]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(block)
        written.append(path)
    (top / "myproject/mylab/__init__.py").write_text("")
    assert len(written) == 7  # four modules, three configs
    return work


def bash(work: Path, command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], cwd=work, text=True, capture_output=True,
                          timeout=300)


@pytest.mark.slow
def test_the_pages_commands_work_as_typed_with_a_package_outside_the_repository(workspace):
    assert len(commands()) == 4
    for command in commands():
        proc = bash(workspace, command)
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        assert "Traceback" not in proc.stderr
    runs = sorted((workspace / "outputs/sweeps/mylab").glob("*/summary.json"))
    assert len(runs) == 2
    for summary in runs:
        text = summary.read_text()
        assert '"status": "completed"' in text
        config = (summary.parent / ".hydra/config.yaml").read_text()
        assert "mylab.nets.tiny_cnn" in config and "mylab.optim.SignDescent" in config
    assert (workspace / "outputs/plots/loss_gap.png").stat().st_size > 10_000
    assert "tiny_cnn" in bash(workspace, "PYTHONPATH=../myproject .venv/bin/python train.py "
                                         "--config-dir ../myproject/conf --help").stdout


@pytest.mark.parametrize("command, says", [
    (".venv/bin/python train.py --config-dir ../myproject/conf model=tiny_cnn dataset=blobs",
     "cannot import mylab.nets.tiny_cnn"),
    (".venv/bin/python train.py --config-dir ../myproject/conf optimizer=sign_descent",
     "cannot import mylab.optim.SignDescent"),
    (".venv/bin/python plots.py runs=outputs/runs figure=mylab.figures.nothing",
     "cannot import mylab.figures"),
])
def test_a_package_not_on_the_path_is_one_line_and_writes_nothing(workspace, command, says):
    def files() -> set[Path]:
        return set((workspace / "outputs").rglob("*")) if (workspace / "outputs").exists() \
            else set()

    before = files()
    proc = bash(workspace, command)
    assert proc.returncode == 2, proc.stderr[-2000:]
    (line,) = proc.stderr.strip().splitlines()
    assert says in line and "PYTHONPATH" in line
    assert files() == before
