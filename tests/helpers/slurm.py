"""A real one-node SLURM cluster for one test session, started from Debian's packages.

`slurmctld`, `slurmd`, `slurmdbd`, `munge` and `mariadb-server` provide the daemons; .ci/run
installs them where they are missing. Everything runs in a temporary folder, as root (SLURM's
SlurmUser is root), on free ports, and is stopped at the end:

- munged with a freshly generated key and its own socket;
- MariaDB for the accounting database, on 127.0.0.1 at a free port;
- slurmdbd, because submitit reads job states with `sacct`: without accounting a job that ends
  without writing its result (scancel, a node failure, a kill at time-out) is never seen to end
  and its sweep waits forever;
- slurmctld and slurmd for this host with its real CPUs and memory (`slurmd -C`),
  proctrack/linuxproc, select/cons_tres, and spool and state folders in the temporary folder.

Commands find the cluster through SLURM_CONF (in `Cluster.env`, which also gives every process
one thread, as the test processes have). SLURM holds a requeued job
for two minutes before it may start again (reason BeginTime); this cluster releases it at once.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.postgres import free_port

DAEMONS = ("slurmctld", "slurmd", "slurmdbd", "munged", "mariadbd", "mysql_install_db",
           "sbatch", "sacct", "scontrol")
PACKAGES = "slurmctld slurmd slurm-client slurmdbd munge mariadb-server"


def why_not() -> str | None:
    """Why no cluster can be started here (None if one can)."""
    missing = [d for d in DAEMONS if shutil.which(d) is None
               and not Path("/usr/sbin", d).exists()]
    if missing:
        return (f"no SLURM test cluster: {', '.join(missing)} missing (apt-get install "
                f"{PACKAGES}, as .ci/run does)")
    if os.geteuid() != 0:
        return "the SLURM test cluster runs its daemons as root"
    return None


def sbin(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


@dataclass
class Cluster:
    root: Path
    env: dict[str, str]  # os.environ with SLURM_CONF: what every command needs
    started_s: float  # how long starting it took

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(list(cmd), env=self.env, capture_output=True, text=True,
                              timeout=60)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr.strip()[-800:]}")
        return done

    def states(self, job: str) -> list[str]:
        """sacct's states of a job (and of its earlier runs when it was requeued)."""
        out = self.run("sacct", "-j", job, "-X", "-D", "-n", "-P", "-o", "JobID,State").stdout
        return [line.split("|")[1] for line in out.splitlines() if line.strip()]

    def final_states(self, job: str, timeout: float = 60) -> list[str]:
        """states(job) once its last run has ended (accounting hears of it a moment after the
        job's result is written)."""
        deadline = time.time() + timeout
        while True:
            states = self.states(job)
            if states and states[-1] not in ("PENDING", "RUNNING", "COMPLETING", "REQUEUED"):
                return states
            if time.time() > deadline:
                raise RuntimeError(f"job {job} has not ended: {states}")
            time.sleep(0.5)

    def jobs(self) -> list[str]:
        """The ids of the jobs in the queue now (pending or running)."""
        out = self.run("squeue", "-h", "-o", "%i").stdout
        return [line.strip() for line in out.splitlines() if line.strip()]

    def wait_idle(self, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while self.jobs():
            if time.time() > deadline:
                raise RuntimeError(f"jobs still queued: {self.jobs()}")
            time.sleep(0.5)


def _wait(what: str, ready, log: Path, timeout: float = 60) -> None:
    """Wait for `ready()`; on time-out, an error with the end of the daemon's logs."""
    deadline = time.time() + timeout
    while not ready():
        if time.time() > deadline:
            logs = [p for p in (log, log.with_suffix(".out")) if p.exists()]
            tail = "\n".join(f"{p.name}: {p.read_text()[-1500:]}" for p in logs)
            raise RuntimeError(f"{what} did not start in {timeout:.0f} s\n{tail}")
        time.sleep(0.2)


@contextmanager
def slurm_cluster() -> Iterator[Cluster]:
    """Start the cluster, yield it, stop it."""
    t0 = time.time()
    root = Path(tempfile.mkdtemp(prefix="trainkit-slurm-"))
    os.chmod(root, 0o755)
    host = socket.gethostname().split(".")[0]
    procs: list[subprocess.Popen] = []
    pids: list[Path] = []
    done = threading.Event()

    def start(name: str, *cmd: str) -> subprocess.Popen:
        log = open(root / f"{name}.out", "w")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(list(cmd), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, env=env)
        procs.append(proc)
        return proc

    # one thread per process, as the test processes have: jobs and runs beside them agree
    env = {**os.environ, "SLURM_CONF": str(root / "slurm.conf"), "OMP_NUM_THREADS": "1"}
    try:
        # -- munge ---------------------------------------------------------------------------
        munge = root / "munge"
        munge.mkdir(mode=0o700)
        key = munge / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        sock = munge / "munge.socket"
        subprocess.run([sbin("munged"), "--force", f"--key-file={key}", f"--socket={sock}",
                        f"--pid-file={munge / 'munged.pid'}", f"--log-file={munge / 'munged.log'}",
                        f"--seed-file={munge / 'munged.seed'}"], check=True, env=env,
                       capture_output=True, timeout=30)
        pids.append(munge / "munged.pid")
        _wait("munged", sock.exists, munge / "munged.log")
        # -- MariaDB -------------------------------------------------------------------------
        db = root / "db"
        db_port = free_port()
        subprocess.run(["mysql_install_db", "--user=root", f"--datadir={db}",
                        "--auth-root-authentication-method=socket", "--skip-test-db"],
                       check=True, capture_output=True, timeout=120, env=env)
        db_sock = root / "mysql.sock"
        start("mariadb", sbin("mariadbd"), "--no-defaults", "--user=root", f"--datadir={db}",
              f"--socket={db_sock}", f"--port={db_port}", "--bind-address=127.0.0.1",
              f"--pid-file={root / 'mariadb.pid'}", "--innodb-flush-log-at-trx-commit=0",
              "--skip-log-bin")
        _wait("MariaDB", db_sock.exists, root / "mariadb.out")
        subprocess.run(["mysql", f"--socket={db_sock}", "-u", "root", "-e",
                        "CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm'; "
                        "GRANT ALL ON *.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;"],
                       check=True, capture_output=True, timeout=30)
        # -- slurmdbd ------------------------------------------------------------------------
        dbd_port, ctld_port, slurmd_port = free_port(), free_port(), free_port()
        dbd_conf = root / "slurmdbd.conf"
        dbd_conf.write_text("\n".join([
            "AuthType=auth/munge", f"AuthInfo=socket={sock}", f"DbdHost={host}",
            f"DbdPort={dbd_port}", "SlurmUser=root", f"PidFile={root / 'slurmdbd.pid'}",
            f"LogFile={root / 'slurmdbd.log'}", "StorageType=accounting_storage/mysql",
            "StorageHost=127.0.0.1", f"StoragePort={db_port}", "StorageUser=slurm",
            "StoragePass=slurm", "StorageLoc=slurm_acct_db", ""]))
        dbd_conf.chmod(0o600)
        start("slurmdbd", sbin("slurmdbd"), "-D")  # its conf: beside SLURM_CONF
        _wait("slurmdbd", lambda: _listening(dbd_port), root / "slurmdbd.log")
        # -- slurmctld and slurmd ------------------------------------------------------------
        node = subprocess.run([sbin("slurmd"), "-C"], capture_output=True, text=True,
                              check=True, timeout=30).stdout.splitlines()[0]
        node = " ".join(w for w in node.split() if w.split("=")[0] in (
            "NodeName", "CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket",
            "ThreadsPerCore", "RealMemory"))
        node = node.replace(f"NodeName={node.split()[0].split('=')[1]}", f"NodeName={host}")
        (root / "state").mkdir()
        (root / "spool").mkdir()
        (root / "slurm.conf").write_text("\n".join([
            "ClusterName=trainkit", f"SlurmctldHost={host}", "SlurmUser=root",
            f"SlurmctldPort={ctld_port}", f"SlurmdPort={slurmd_port}",
            "AuthType=auth/munge", f"AuthInfo=socket={sock}", "CredType=cred/munge",
            f"StateSaveLocation={root / 'state'}", f"SlurmdSpoolDir={root / 'spool'}",
            f"SlurmctldPidFile={root / 'slurmctld.pid'}",
            f"SlurmdPidFile={root / 'slurmd.pid'}",
            f"SlurmctldLogFile={root / 'slurmctld.log'}",
            f"SlurmdLogFile={root / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core",
            "SchedulerType=sched/builtin", "MpiDefault=none", "ReturnToService=2",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/slurmdbd",
            f"AccountingStorageHost={host}", f"AccountingStoragePort={dbd_port}",
            f"AccountingStoragePass={sock}",  # the munge socket for slurmdbd, too
            "JobRequeue=1", "KillWait=5", "MinJobAge=2", "InactiveLimit=0",
            "SlurmctldTimeout=30", "SlurmdTimeout=30",
            f"{node} State=UNKNOWN",
            f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP", ""]))
        # the cluster must be known to the accounting database before slurmctld registers
        _sacctmgr(env, "add", "cluster", "trainkit")
        _sacctmgr(env, "add", "account", "trainkit", "Cluster=trainkit")
        _sacctmgr(env, "add", "user", "root", "Account=trainkit", "Cluster=trainkit")
        start("slurmctld", sbin("slurmctld"), "-D", "-i")
        _wait("slurmctld", lambda: _listening(ctld_port), root / "slurmctld.log")
        start("slurmd", sbin("slurmd"), "-D")
        cluster = Cluster(root, env, 0.0)

        def node_idle() -> bool:
            out = cluster.run("sinfo", "-h", "-o", "%t", check=False).stdout.strip()
            return out == "idle"

        _wait("slurmd (node idle)", node_idle, root / "slurmd.log", timeout=90)
        cluster.started_s = time.time() - t0
        releaser = threading.Thread(target=_release_requeued, args=(cluster, done),
                                    name="release-requeued", daemon=True)
        releaser.start()
        yield cluster
    finally:
        done.set()
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for pid_file in pids:
            with suppress(OSError, ValueError):
                os.kill(int(pid_file.read_text().strip()), 15)
        shutil.rmtree(root, ignore_errors=True)


def _release_requeued(cluster: Cluster, done: threading.Event) -> None:
    """SLURM holds a requeued job for two minutes (reason BeginTime) before it may start again;
    the test cluster lets it start at once, so that a test of a requeue takes seconds."""
    while not done.wait(0.5):
        out = cluster.run("squeue", "-h", "-t", "PENDING", "-o", "%i %r", check=False).stdout
        for line in out.splitlines():
            job, _, reason = line.partition(" ")
            if reason.strip() == "BeginTime":
                cluster.run("scontrol", "update", f"jobid={job}", "StartTime=now", check=False)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _sacctmgr(env: dict[str, str], *args: str) -> None:
    done = subprocess.run(["sacctmgr", "-i", *args], env=env, capture_output=True, text=True,
                          timeout=60)
    if done.returncode != 0 and "Nothing new added" not in done.stdout + done.stderr:
        raise RuntimeError(f"sacctmgr {' '.join(args)} failed: {done.stderr.strip()[-500:]}")
