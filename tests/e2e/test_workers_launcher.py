"""hydra/launcher=workers as it is used: a grid with a bad and a diverging job gives the runs the
basic launcher gives, to the bit; a worker killed under its job fails that job alone, the sweep
goes on and a rerun resumes it; Ctrl-C records the running jobs as interrupted and leaves no
process behind; a bad n_jobs is one line before anything is written."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from tests.helpers.runs import QUIET, run_script, snapshot, start, summary, wait_for

WORKERS = ["hydra/launcher=workers", "hydra.launcher.n_jobs=2"]
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}  # the basic launcher's run as a worker's


def runs(folder: Path) -> dict[str, dict]:
    return {d.name: summary(d) for d in sorted(folder.iterdir()) if (d / "summary.json").exists()}


def history(run_dir: Path) -> list[dict]:
    """The run's history without its clock readings."""
    records = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.endswith(("_s", "_time"))} for r in records]


def children(pid: int) -> set[int]:
    """The processes whose parent is `pid`."""
    out = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                stat = (proc / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.add(int(proc.name))
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.smoke  # make test-fast runs it
def test_a_grid_on_workers_gives_the_basic_launchers_runs_with_its_failures(tmp_path):
    grid = ["-m", "debug=fast", "optimizer=sgd", "optimizer.lr=0.1,1e6,-1", "seed=0,1", *QUIET]
    on_workers = run_script("train.py", [*grid, *WORKERS, f"hydra.sweep.dir={tmp_path / 'w'}"],
                            env=ONE_THREAD)
    basic = run_script("train.py", [*grid, f"hydra.sweep.dir={tmp_path / 'b'}"], env=ONE_THREAD)
    for proc in (on_workers, basic):  # a job failed: non-zero, after all six
        assert proc.returncode == 1, proc.stderr[-3000:]
        assert "sweep: 6 job(s): 2 completed, 2 diverged, 2 failed" in proc.stdout
    w, b = runs(tmp_path / "w"), runs(tmp_path / "b")
    assert sorted(w) == sorted(b) and len(w) == 6
    pids = {s["pid"] for s in w.values() if "pid" in s}
    assert len(pids) == 2 and os.getpid() not in pids  # two workers, neither the sweeper
    for name in w:
        assert w[name]["status"] == b[name]["status"]
        if w[name]["status"] == "failed":
            assert w[name]["error"] == b[name]["error"] and "Invalid learning rate" in w[name][
                "error"]
            continue
        assert w[name]["metrics"] == b[name]["metrics"], name  # the same run, to the bit
        assert history(tmp_path / "w" / name) == history(tmp_path / "b" / name)
        for record in ("config.yaml", "overrides.yaml"):  # Hydra's record of the job
            assert ((tmp_path / "w" / name / ".hydra" / record).read_text()
                    == (tmp_path / "b" / name / ".hydra" / record).read_text())


def test_a_killed_worker_fails_its_job_alone_and_a_rerun_resumes_it(tmp_path):
    args = ["-m", "debug=fast", "epochs=150", "seed=0,1,2", *QUIET, *WORKERS,
            f"hydra.sweep.dir={tmp_path}"]
    proc = start("train.py", args, tmp_path / "log")
    first = tmp_path / "debug=fast,epochs=150,seed=0"

    def trained() -> bool:
        path = first / "checkpoint.pt"
        return path.exists() and (first / "run.lock").exists()

    wait_for(trained, timeout=180, what="the first job's checkpoint")
    victim = json.loads((first / "run.lock").read_text())["pid"]
    os.kill(victim, signal.SIGKILL)
    assert proc.wait(timeout=300) == 1
    out = (tmp_path / "log").read_text()
    assert "its worker process died" in out, out[-3000:]
    assert "sweep: 3 job(s): 2 completed, 1 failed" in out, out[-3000:]
    assert "Traceback" not in out
    done = runs(tmp_path)
    assert {n: s["status"] for n, s in done.items() if s.get("status")} == {
        "debug=fast,epochs=150,seed=1": "completed", "debug=fast,epochs=150,seed=2": "completed"}
    assert not (first / "summary.json").exists()  # its run is there to resume, not a result
    finished = {n: snapshot(tmp_path / n) for n in done}
    again = run_script("train.py", args, timeout=300)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "sweep: 3 job(s): 3 completed" in again.stdout
    assert summary(first)["status"] == "completed"
    assert "resuming" in (first / "train.log").read_text()
    for name, files in finished.items():  # reused as they are
        assert snapshot(tmp_path / name) == files


def test_ctrl_c_records_the_running_jobs_as_interrupted_and_leaves_no_worker(tmp_path):
    args = ["-m", "debug=fast", "epochs=400", "seed=0,1", *QUIET, *WORKERS,
            f"hydra.sweep.dir={tmp_path}"]
    proc = start("train.py", args, tmp_path / "log")
    dirs = [tmp_path / f"debug=fast,epochs=400,seed={s}" for s in (0, 1)]
    wait_for(lambda: all((d / "checkpoint.pt").exists() for d in dirs), timeout=180,
             what="both jobs' first checkpoints")
    workers = children(proc.pid)
    assert len(workers) >= 2  # the two workers (and multiprocessing's resource tracker)
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    out = (tmp_path / "log").read_text()
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out[-3000:]
    for d in dirs:
        assert summary(d)["status"] == "interrupted"
    wait_for(lambda: not any(alive(p) for p in workers), timeout=15, what="the workers' end")


@pytest.mark.parametrize("script", ["train", "tune"])
@pytest.mark.parametrize("n_jobs", ["0", "-2", "two"])
def test_a_bad_n_jobs_is_one_line_and_writes_nothing(tmp_path, script, n_jobs):
    proc = run_script(f"{script}.py", ["-m", "debug=fast", "seed=0,1", "hydra/launcher=workers",
                                       f"hydra.launcher.n_jobs={n_jobs}", *QUIET,
                                       f"hydra.sweep.dir={tmp_path / 'sweep'}"]
                      if script == "train" else
                      ["debug=fast", "hydra/launcher=workers", f"hydra.launcher.n_jobs={n_jobs}",
                       *QUIET, f"hydra.sweep.dir={tmp_path / 'sweep'}"])
    assert proc.returncode == 2, proc.stderr[-3000:]
    said = ("is not a number of worker processes: use a positive integer, or -1 for one per "
            "CPU core" if n_jobs != "two" else  # a word: the command line's type check says so
            "is not a number: type a number, e.g. hydra.launcher.n_jobs=-1")
    assert proc.stderr.strip() == f"error: hydra.launcher.n_jobs={n_jobs} {said}"
    assert not (tmp_path / "sweep").exists()
