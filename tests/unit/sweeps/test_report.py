"""The sweep's last lines (src/sweeps/report.py): a local sweep lists the jobs that did not
complete; a SLURM sweep lists every job with its SLURM job id."""

from __future__ import annotations

from hydra.core.utils import JobReturn, JobStatus

from src.sweeps.report import JobResult, SweepReport


def returned(result: JobResult) -> JobReturn:
    ret = JobReturn()
    ret.return_value, ret.status = result, JobStatus.COMPLETED
    return ret


def test_a_local_sweep_lists_what_did_not_complete():
    report = SweepReport()
    report.add([returned(JobResult("completed", 0.9, "runs/a")),
                returned(JobResult("failed", None, "runs/b", "ValueError: lr=-1"))])
    assert report.lines() == ["sweep: 2 job(s): 1 completed, 1 failed",
                              "  failed    runs/b: ValueError: lr=-1"]
    assert report.exit_status == 1


def test_a_slurm_sweep_lists_every_job_with_its_id():
    report = SweepReport()
    report.add([returned(JobResult("completed", 0.9, "runs/a", job="12_0")),
                returned(JobResult("failed", None, "runs/b", "SLURM job 12_1 ended CANCELLED",
                                   "12_1", "CANCELLED"))])
    assert report.lines() == [
        "sweep: 2 job(s): 1 completed, 1 failed",
        "  completed runs/a (SLURM job 12_0)",
        "  failed    runs/b (SLURM job 12_1): SLURM job 12_1 ended CANCELLED"]
