"""The sweep's last lines (src/sweeps/report.py): a table of its jobs with their objectives and
run directories, the best one named; a SLURM sweep's jobs with their SLURM job ids."""
from __future__ import annotations

from hydra.core.utils import JobReturn, JobStatus

from src.sweeps.report import JobResult, SweepReport


def returned(result: JobResult) -> JobReturn:
    ret = JobReturn()
    ret.return_value, ret.status = result, JobStatus.COMPLETED
    return ret


def test_a_sweep_ends_with_a_table_of_its_jobs_and_names_the_best():
    report = SweepReport("val_acc")
    report.add([returned(JobResult("completed", 0.9, "runs/a")),
                returned(JobResult("completed", 0.95, "runs/c")),
                returned(JobResult("failed", None, "runs/b", "ValueError: lr=-1"))])
    assert report.lines() == ["sweep: 3 job(s): 2 completed, 1 failed",
                              "  status      val_acc  run directory",
                              "  completed       0.9  runs/a",
                              "  completed      0.95  runs/c",
                              "  failed            -  runs/b: ValueError: lr=-1",
                              "best: val_acc = 0.95 in runs/c"]
    assert report.exit_status == 1
    assert SweepReport("val_loss").best() is None  # nothing completed: no best
    losses = SweepReport("val_loss")
    losses.add([returned(JobResult("completed", v, f"runs/{v}")) for v in (0.5, 0.2, 0.9)])
    assert losses.best().run_dir == "runs/0.2"  # a loss: the lowest is the best


def test_a_long_sweep_shows_its_best_jobs_and_every_one_that_did_not_complete():
    report = SweepReport("val_acc")
    report.add([returned(JobResult("completed", i / 100, f"runs/{i}")) for i in range(30)])
    report.add([returned(JobResult("diverged", None, "runs/d"))])
    lines = report.lines()
    assert len(lines) == 2 + 10 + 1 + 1 + 1
    assert lines[2].endswith("runs/20") and "runs/d" in lines[-3]
    assert lines[-2].startswith("  ... 20 more completed") and lines[-1].endswith("runs/29")


def test_a_slurm_sweep_lists_every_job_with_its_id():
    report = SweepReport()
    report.add([returned(JobResult("completed", 0.9, "runs/a", job="12_0")),
                returned(JobResult("failed", None, "runs/b", "SLURM job 12_1 ended CANCELLED",
                                   "12_1", "CANCELLED"))])
    assert report.lines()[2:4] == [
        "  completed       0.9  runs/a (SLURM job 12_0)",
        "  failed            -  runs/b (SLURM job 12_1): SLURM job 12_1 ended CANCELLED"]


def test_the_table_names_what_the_runs_return():
    # a pruning sweep's jobs return the prune potential, whatever objective= says
    report = SweepReport("val_acc")
    report.add([returned(JobResult("completed", v, f"runs/{v}",
                                   objective_name="prune_potential@0.5")) for v in (0.9, 0.95)])
    assert "prune_potential@0.5" in report.lines()[1]
    assert report.lines()[-1] == "best: prune_potential@0.5 = 0.95 in runs/0.95"
    report.add([returned(JobResult("completed", 0.99, "runs/c", objective_name="val_acc"))])
    assert report.best() is None and "objective" in report.lines()[1]  # no one ordering
