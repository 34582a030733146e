"""Every shell command of README.md and of the pages of docs/, run as bash runs it, in order, in a
scratch workspace.

The workspace links the project's code and .venv and holds generated CIFAR-10 and MNIST files in
the real formats (no download here). Where a command would train for long, fast settings are
appended (debug=fast, a sweep collapsed to a few jobs); cluster commands run on this machine's
stand-ins (submitit_local for submitit_slurm, without its SLURM-only keys: tests/e2e/test_slurm.py
runs the cluster path on a real SLURM; a PostgreSQL server started here; both torchrun "nodes" on
127.0.0.1). The README's plots.py commands are run by
tests/e2e/test_figures.py::test_the_readmes_plots_commands_work_as_typed on a folder named as the
README's sweeps name theirs; `make test` is this suite itself.

Marked `readme`: `make test-readme` runs it, and CI runs it after `make test`.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.datafiles import write_cifar10, write_idx
from tests.helpers.docs import pages
from tests.helpers.postgres import free_port, postgres_server, why_not
from tests.helpers.runs import ROOT

pytestmark = [pytest.mark.readme, pytest.mark.xdist_group("readme")]

LINKED = ("train.py", "tune.py", "eval.py", "plots.py", "conf", "src", "hydra_plugins",
          "benchmarks", "Makefile", "requirements.txt", ".venv")
SKIPPED = {"make test": "this suite itself",
           "make bench": "ten minutes: tests/e2e/test_benchmarks.py runs the suite at tiny sizes",
           "bash benchmarks/gpu.sh --dry": "test_the_gpu_kits_dry_mode_as_the_readme_shows_it"}
# pages whose commands another test runs, in the workspace they need
RUN_ELSEWHERE = {"extending.md": "tests/e2e/test_extending.py: a project folder beside trainkit"}
# (pattern of a command, settings appended to each train.py / tune.py / torchrun invocation)
FAST = [
    (r"", ["debug=fast"]),
    (r"tune\.py", ["hydra.sweeper.n_trials=2"]),
    (r"experiment=ema_resnet20_cifar10", ["model=mlp", "seed=1111"]),
    (r"experiment=ema_resnet20_cifar10_lr", ["optimizer.lr=0.1"]),  # its six learning rates
    (r"experiment=prune_resnet20_cifar10", ["pruning.keep_ratios.count=2"]),
    # an MLP where the command names no conv-only method (filter_l1)
    (r"experiment=prune_resnet20_cifar10 (debug|pruning=snip|pruning=pfp)", ["model=mlp"]),
    (r"experiment=regimes_perceptron_chi0", ["batch_size=16", "task.dt=1"]),
    (r"experiment=csgd_compressed_sgd", ["optimizer.lr=1e-3", "compression.compressor.decay=0.7"]),
    (r"experiment=csgd_(sgd|sign_sgd)", ["optimizer.lr=0.1"]),
    (r"-m experiment=record_\w+ lr_grid=\S+$", ["optimizer.lr=0.01", "seed=0"]),
    (r"lr_grid=\$opt", ["optimizer.lr=0.01", "seed=0"]),
]
# (pattern, replacement) applied to the command's text first
REPLACE = [
    (r"hydra\.sweeper\.n_trials=\d+", "hydra.sweeper.n_trials=2"),
    # another net is 7 more methods and a reference (200 s): the sweep's form, on the net of
    # the command before (its runs reused); tests/unit/pruning/test_pruning.py merges two nets
    (r"(prune_resnet20_cifar10) seed=0,1,2", r"\1 seed=0"),
    (r"optimizer\.lr=0\.5,0\.2,0\.1,0\.05,0\.02,0\.01", "optimizer.lr=0.1"),  # Table 2
    (r"task\.dt=0\.125,0\.25,0\.5,1", "task.dt=0.125,0.25"),
    (r"submitit_slurm", "submitit_local"),
    (r"hydra\.launcher\.(partition|gpus_per_node|max_num_timeout|signal_delay_s)=\S+", ""),
    (r"--nproc_per_node=4 --rdzv", "--nproc_per_node=1 --rdzv"),
    (r"(benchmarks/pruning\.py)\s*$", r"\1 --models bn_cnn --keep 0.5 --pairs 3"),
]


def readme_commands() -> list[str]:
    """The bash commands of the ```bash blocks of README.md and docs/, continuation lines and
    loops joined."""
    commands, block, pending = [], False, ""
    shown = (page for page in pages() if page.name not in RUN_ELSEWHERE)
    for line in (line for page in shown for line in page.read_text().splitlines()):
        if line.startswith("```"):
            block = line.strip() == "```bash" and not block
            continue
        if not block or (not pending and (not line.strip() or line.lstrip().startswith("#"))):
            continue
        pending = f"{pending}\n{line}" if pending else line
        complete = subprocess.run(["bash", "-n", "-c", pending], capture_output=True).returncode
        if not pending.rstrip().endswith("\\") and complete == 0:
            commands.append(pending)
            pending = ""
    return commands


def uncommented(line: str) -> str:
    """A line without its trailing comment (a '#' after a blank, outside quotes)."""
    quote = None
    for i, char in enumerate(line):
        if char in "'\"" and quote in (None, char):
            quote = None if quote else char
        elif char == "#" and quote is None and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line


def fast(command: str, postgres_url: str | None) -> str | None:
    """The command as this test runs it (None: not run here)."""
    if uncommented(command).strip() in SKIPPED or "plots.py" in command:
        return None
    text = "\n".join(uncommented(line) for line in command.replace("\\\n", " ").splitlines())
    for pattern, replacement in REPLACE:
        text = re.sub(pattern, replacement, text)
    if "postgresql://" in text:
        if postgres_url is None:
            return None
        text = re.sub(r"postgresql://\S+", postgres_url, text)
    extra: list[str] = []
    for pattern, settings in FAST:
        if re.search(pattern, text.strip()):
            extra += [s for s in settings if s.split("=")[0] + "=" not in text]
    invocation = r"(\.venv/bin/(?:python (?:train|tune)\.py|torchrun [^;&]*?train\.py)[^;&\n]*)"
    text = re.sub(invocation, lambda m: m.group(1).rstrip() + " " + " ".join(extra), text)
    if "--nnodes=2" in text:  # both "nodes" on this machine, meeting at 127.0.0.1
        node = text.strip().replace("node01:29500", f"127.0.0.1:{free_port()}")
        text = f"{node} & a=$!; {node} & b=$!; wait $a && wait $b"
    if re.search(r"mlflow (ui|server)", text):  # a server: it must serve the README's runs
        port = free_port()
        probe = ("import json,time,urllib.request as u\n"
                 "for _ in range(90):\n"
                 "    try:\n"
                 f"        r=u.urlopen(\"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/"
                 "search?max_results=100\")\n"
                 "        names=[e[\"name\"] for e in json.load(r)[\"experiments\"]]\n"
                 "        assert any(\"seed=8,9\" in n for n in names), names\n"
                 "        break\n"
                 "    except OSError:\n"
                 "        time.sleep(1)\n"
                 "else:\n"
                 "    raise SystemExit(\"mlflow ui did not answer\")\n")
        return (f"{text.strip()} --port {port} & server=$!; .venv/bin/python -c '{probe}'; "
                f"ok=$?; kill $server; wait $server; test $ok = 0")
    if "optuna-dashboard" in text:  # a server: it must start and keep serving
        # The README's default search ran here with debug=fast: its study has another digest.
        text = re.sub(r"outputs/tune/[^/]+/optuna\.db",
                      "$(ls outputs/tune/digits-mlp-val_acc-*/optuna.db | head -n 1)", text)
        text = f"timeout 8 {text.strip()} --port {free_port()}; test $? = 124"
    return text


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("readme")
    for name in LINKED:
        (work / name).symlink_to(ROOT / name)
    write_cifar10(work / "data", per_batch=100)  # 500 training images, 100 test images
    raw = work / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    write_idx(raw, "train", rng.integers(0, 256, (600, 28, 28)), rng.integers(0, 10, 600))
    write_idx(raw, "t10k", rng.integers(0, 256, (200, 28, 28)), rng.integers(0, 10, 200))
    return work


@pytest.fixture(scope="module")
def postgres_url():
    if why_not() is not None:
        yield None
        return
    with postgres_server() as url:
        yield url


COMMANDS = readme_commands()


def test_the_readme_commands_are_found():
    assert len(COMMANDS) >= 45
    assert any(c.startswith("for opt in") for c in COMMANDS)
    assert any("--nnodes=2" in c for c in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS, ids=[c.split("#")[0].strip()[:80] for c in COMMANDS])
def test_a_readme_command_works_as_typed(workspace, postgres_url, command):
    line = fast(command, postgres_url)
    if line is None:
        reason = SKIPPED.get(uncommented(command).strip(), "plots.py commands: "
                             "tests/e2e/test_figures.py")
        pytest.skip(reason if postgres_url or "postgresql" not in command else why_not())
    proc = subprocess.run(["bash", "-c", line], cwd=workspace, text=True, capture_output=True,
                          timeout=600)
    assert proc.returncode == 0, f"{line}\n{proc.stdout[-2500:]}\n{proc.stderr[-2500:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-2500:]


def test_the_gpu_kits_dry_mode_as_the_readme_shows_it(tmp_path):
    """bash benchmarks/gpu.sh --dry: the cuda-marked tests on the CPU, then every GPU benchmark
    at tiny sizes (this is also where throughput.py, compression.py, evaluation.py and
    pruning.py are checked end to end)."""
    assert "bash benchmarks/gpu.sh --dry" in [uncommented(c).strip() for c in COMMANDS]
    out = tmp_path / "gpu"
    proc = subprocess.run(["bash", "benchmarks/gpu.sh", "--dry", "--out", str(out)], cwd=ROOT,
                          text=True, capture_output=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    tests = (out / "cuda_tests.xml").read_text()
    assert 'failures="0"' in tests and 'errors="0"' in tests and 'skipped="0"' in tests
    assert 'tests="0"' not in tests

    def spread(r: dict, rounds: int = 2) -> None:  # harness.ratio over rotating rounds
        assert 0 < r["ratio_min"] <= r["ratio"] <= r["ratio_max"] and r["rounds"] == rounds

    row = json.loads((out / "throughput.json").read_text())["rows"][0]
    for key in ("ours_img_s", "standard_img_s", "bare_loop_img_s", "ours_ema5_img_s"):
        assert row[key] > 0
    for key in ("vs_standard", "vs_bare", "ema5_cost", "compiled_vs_eager"):
        spread(row[key])
    assert row["compile_mode"] == "default"
    compression = json.loads((out / "compression.json").read_text())
    training = compression["training"][0]
    for key in ("eager", "fused", "fused_speedup"):  # a C++ compiler is at hand: it fuses
        spread(training[key])
    assert [p["bits"] for p in compression["packing"]] == [1, 2, 3, 4, 8]
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert evaluation["states"] == 12 and evaluation["pairs"] == 2
    assert evaluation["accuracy_identical"] and evaluation["loss_max_rel_diff"] == 0.0  # exact
    assert evaluation["speedup_min"] <= evaluation["speedup"] <= evaluation["speedup_max"]
    rows = json.loads((out / "pruning.json").read_text())["rows"]
    assert {r["method"] for r in rows} == {"filter_l1", "pfp", "alds"}
    for r in rows:
        assert r["speedup_min"] <= r["speedup"] <= r["speedup_max"]
        assert r["max_abs_diff"] <= 1e-4 and r["params"] < r["params_reference"]
    stacked = json.loads((out / "stacked.json").read_text())["results"]
    assert [r["setup"] for r in stacked] == ["resnet20", "perceptron"]
    for r in stacked:
        assert 0 < r["stacked_vs_best"]["ratio_min"] <= r["stacked_vs_best"]["ratio_max"]
        assert r["stacked_samples_per_s"] > 0 and r["samples_per_sweep"] > 0
    bad = subprocess.run(["bash", "benchmarks/gpu.sh", "--fast"], cwd=ROOT, text=True,
                         capture_output=True)
    assert bad.returncode == 2 and "unknown argument --fast" in bad.stderr
