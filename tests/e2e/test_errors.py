"""Every user mistake gets one line: a table of bad inputs across train.py, tune.py, eval.py and
plots.py, each giving exit status 2, exactly one `error:` line on stderr, no traceback, and an
existing run left byte-identical. Then files from someone else that carry code: none runs."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.plugins.hparams.api_pb2 import Status

from tests.helpers.datafiles import write_cifar10, write_mnist_tree
from tests.helpers.runs import ROOT, hparams_of_run, run_script, snapshot, start, train, wait_for

QUIET = ["trainer.progress=false", "logger=none"]


class Payload:
    """A pickle that, when loaded by pickle.load, creates a marker file (it must never exist)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def place(tmp_path_factory) -> dict[str, Path]:
    """A finished run, and the files and folders the bad inputs point at."""
    root = tmp_path_factory.mktemp("errors")
    run = root / "run"
    train(run, "debug=fast", "device=cpu", *QUIET)
    paths = {"root": root, "run": run, "marker": root / "payload-ran"}
    # CIFAR-10: a truncated batch, a planted payload, and files that differ from the published.
    for name in ("truncated", "payload", "regenerated"):
        write_cifar10(root / name)
    batch = root / "truncated" / "cifar-10-batches-py" / "data_batch_1"
    batch.write_bytes(batch.read_bytes()[:100])
    with open(root / "payload" / "cifar-10-batches-py" / "data_batch_1", "wb") as f:
        pickle.dump({b"data": Payload(paths["marker"]), b"labels": [0]}, f, protocol=2)
    # MNIST with an image file whose header promises more images than it holds.
    write_mnist_tree(root / "mnist", "MNIST")
    images = root / "mnist" / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:200])
    # A run directory from someone else whose config builds os.system.
    planted = root / "planted"
    shutil.copytree(run, planted)
    config = yaml.safe_load((planted / ".hydra" / "config.yaml").read_text())
    config["model"] = {"_target_": "os.system", "command": f"touch {paths['marker']}"}
    (planted / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    # A run whose eval.json cannot be written (a folder stands there), one with a damaged
    # summary, a corrupt checkpoint, a garbage file.
    shutil.copytree(run, root / "blocked")
    (root / "blocked" / "eval.json").mkdir()
    shutil.copytree(run, root / "damaged")
    (root / "damaged" / "summary.json").write_text('{"status": "compl')
    shutil.copytree(run, root / "corrupt")
    (root / "corrupt" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    # A run whose checkpoint.pt was trained with another config (a wider network).
    train(root / "wider", "debug=fast", "device=cpu", "model.width=64", *QUIET)
    shutil.copytree(run, root / "swapped")
    shutil.copy(root / "wider" / "checkpoint.pt", root / "swapped" / "checkpoint.pt")
    return paths


def held_lock(place: dict[str, Path]) -> Path:
    """A run directory whose lock a live process (this test's) holds."""
    locked = place["root"] / "locked"
    if not locked.exists():
        locked.mkdir()
        (locked / "run.lock").write_text(json.dumps(
            {"host": os.uname().nodename, "pid": os.getpid(), "start": None}))
    return locked


CASES = [
    # train.py: settings our checks reject
    ("train", ["num_bits=0"], "num_bits=0"),
    ("train", ["num_bits=33"], "num_bits=33"),
    ("train", ["workers=0"], "workers=0"),
    ("train", ["batch_size=0"], "batch_size=0"),
    ("train", ["batch_size=abc"], "batch_size=abc"),
    ("train", ["epochs=-1"], "epochs=-1"),
    ("train", ["init_seed=-1"], "init_seed=-1"),
    ("train", ["objective=ema_0.5/val_acc"], "objective=ema_0.5/val_acc"),
    ("train", ["device=tpu"], "device=tpu"),
    ("train", ["dataset.val_split=dev"], "dataset.val_split=dev"),
    ("train", ["trainer.amp=fp8"], "trainer.amp=fp8"),
    ("train", ["trainer.compile=fast"], "trainer.compile=fast is not a setting"),
    ("train", ["dataset=teacher_student"], "add task=regimes"),
    ("train", ["task=regimes", "workers=2"], "workers=2"),
    ("train", ["task=regimes", "task.alpha=0"], "task.alpha=0"),
    ("train", ["pruning=magnitude", "pruning.mode=foo"], "pruning.mode=foo"),
    ("train", ["pruning=magnitude", "pruning.from_run={root}/nothing"], "not a trained run"),
    # train.py: settings a component rejects
    ("train", ["optimizer.lr=-1"], "Invalid learning rate: -1"),
    ("train", ["model=timm", "model.name=resnet10"], "did you mean resnet10t"),
    ("train", ["model=torchvision", "model.name=resnet19"], "did you mean resnet18"),
    ("train", ["dataset=image_folder"], "dataset=image_folder needs dataset.root=<folder"),
    ("train", ["dataset=image_folder", "dataset.root={root}/nothing"], "has no train/ folder"),
    ("train", ["dataset=fake", "+dataset.resident=false"], "only dataset=image_folder"),
    ("train", ["-m", "model=timm,torchvision", "model.name=resnet18"],
     "write ++model.name=resnet18"),
    ("train", ["model=torchvision", "model.pretrained=true", "model.name=alexnet"],
     "a run never downloads"),
    ("train", ["averaging.decays=[1.5]"], "must lie in [0, 1)"),
    ("train", ["averaging.decays=[0.9,0.9]"], "repeats a decay"),
    ("train", ["compression=minmax"], "rejects its settings"),
    ("train", ["optimizer=compressed_sgd", "compression=scaled_sign", "compression.fused=true"],
     "compression.fused=true, but error feedback"),
    # train.py: what Hydra would report in many lines
    ("train", ["epchs=5"], "did you mean epochs?"),
    ("train", ["optimizer.lrr=0.1"], "did you mean optimizer.lr"),
    ("train", ["model=resnet21"], "unknown model 'resnet21'"),
    ("train", ["experiment=nope"], "unknown experiment 'nope'"),
    ("train", ["hydra/launcher=nope"], "unknown hydra/launcher 'nope'"),
    ("train", ["optimizer.lr=("], "cannot read"),
    ("train", ["optimizer.lr=0.1,0.2"], "add -m (--multirun)"),
    ("train", ["optimiser=adam"], "did you mean optimizer=adam"),
    ("train", ["sheduler=cosine"], "did you mean scheduler=cosine"),
    # train.py: a value of the wrong type
    ("train", ["optimizer.lr=0.1O"], "optimizer.lr=0.1O is not a number"),
    ("train", ["optimizer.lr=abc"], "optimizer.lr=abc is not a number"),
    ("train", ["averaging.decays=0.99"], "write averaging.decays=[0.99]"),
    ("train", ["-m", "averaging.decays=0.9,0.99"], "write averaging.decays=[0.9],[0.99]"),
    ("train", ["averaging.decays=[0.9,x]"], "'x', which is not a number"),
    ("train", ["trainer.progress=yes"], "is not true or false"),
    ("train", ["dataset.augment=5"], "is a group of settings"),
    ("train", ["-m", "epochs=1,two"], "epochs=1,two: two is not a number"),
    # train.py: names from the code bases our users come from, and removed settings
    ("train", ["global_seed=1234"], "here type seed=1234"),
    ("train", ["averaged.decay=0.99"], "here type averaging.decays=[0.99]"),
    ("train", ["--lr", "0.1"], "here type optimizer.lr=0.1"),
    ("train", ["--dt=0.5"], "here type task.dt=0.5"),
    ("train", ["--fast"], "--fast is not an option"),
    ("train", ["trainer.tensorboard=false"], "trainer.tensorboard was removed: use logger="),
    # train.py: a launcher's own settings, before the sweep writes anything
    ("train", ["-m", "hydra/launcher=stacked", "hydra.launcher.slots=0", "seed=0,1"],
     "hydra.launcher.slots=0"),
    ("train", ["-m", "hydra/launcher=workers", "hydra.launcher.n_jobs=0", "seed=0,1"],
     "hydra.launcher.n_jobs=0"),
    # train.py: data on disk
    ("train", ["dataset=cifar10", "data_dir={root}/empty"], "dataset.download=true"),
    ("train", ["experiment=prune_resnet20_cifar10", "data_dir={root}/empty"],
     "cifar10 not found"),
    ("train", ["task=regimes", "dataset=mnist_parity", "data_dir={root}/empty"],
     "mnist not found"),
    ("train", ["dataset=cifar10", "data_dir={root}/truncated"], "truncated or damaged"),
    ("train", ["dataset=cifar10", "data_dir={root}/payload"], "refused"),
    ("train", ["dataset=cifar10", "data_dir={root}/regenerated", "dataset.checksums=strict"],
     "differs from the published"),
    ("train", ["dataset=mnist", "data_dir={root}/mnist"], "truncated or damaged"),
    # train.py: run directories
    ("train", ["epochs=3", "hydra.run.dir={run}"], "another config"),
    ("train", ["hydra.run.dir=/sys/trainkit"], "cannot write in /sys"),
    ("train", ["hydra.run.dir={locked}"], "is in use by pid"),
    # train.py: experiment trackers that cannot start (before anything is written)
    ("train", ["logger=[tensorboard,mlfow]"], "unknown logger 'mlfow'"),
    ("train", ["logger=mlflow", "logger.mlflow.tracking_uri=foo://nowhere"],
     "logger.mlflow.tracking_uri=foo://nowhere: MLflow cannot use this store"),
    ("train", ["logger=mlflow", "logger.mlflow.tracking_uri=sqlite:////sys/trainkit/m.db"],
     "logger.mlflow.tracking_uri=sqlite:////sys/trainkit/m.db: MLflow cannot use"),
    ("train", ["logger=wandb", "logger.wandb.dir=/sys/trainkit"], "cannot write there"),
    ("train", ["logger=wandb", "logger.wandb.mode=cloud"], "logger.wandb.mode=cloud"),
    # tune.py
    ("tune", ["optimizer.lr=tag(log,interval(0,1))"], "needs low > 0"),
    ("tune", ["hydra.sweeper.direction=upward"], "direction=upward"),
    ("tune", ["hydra.sweeper.storage=sqlite:////sys/trainkit/optuna.db"], "cannot create"),
    ("tune", ["hydra/sweeper/sampler=foo"], "unknown hydra/sweeper/sampler 'foo'"),
    ("tune", ["hydra.sweeper.n_trials=0"], "n_trials=0"),
    ("tune", ["epchs=5"], "did you mean epochs?"),
    ("tune", ["objective=nope"], "objective=nope is not a metric"),
    # eval.py
    ("eval", [], "needs checkpoint="),
    ("eval", ["checkpoint={root}/nothing"], "no checkpoint at"),
    ("eval", ["checkpoint={root}/corrupt"], "corrupt or unreadable"),
    ("eval", ["checkpoint={root}/swapped"], "was trained with another config"),
    ("eval", ["checkpoint={run}", "splits=[dev]"], "not splits"),
    ("eval", ["checkpoint={run}", "device=tpu"], "device=tpu"),
    ("eval", ["checkpoint={root}/planted"], "'os.system'"),
    ("eval", ["checkpoint={root}/blocked"], "pass out=<a writable file>"),
    ("eval", ["checkpoint={run}", "out={root}/nothing/eval.json"], "cannot write"),
    # plots.py
    ("plots", ["runs={run}", "figure=violin"], "figure=violin"),
    ("plots", ["runs={run}", "metric=nope"], "metric=nope"),
    ("plots", ["runs={root}/nothing"], "matches no run directory"),
    ("plots", ["runs={run}", "x=time"], "x=time"),
    ("plots", ["runs={run}", "group_by=[nokey]"], "nokey"),
    ("plots", ["runs={run}", "out_dir=/sys/trainkit"], "cannot write"),
    ("plots", ["runs={root}/damaged"], "not JSON"),
    ("plots", ["runs={run}", "figure=records"], "record run"),
]


@pytest.mark.parametrize(("script", "args", "says"), CASES,
                         ids=[f"{s}:{' '.join(a) or 'nothing'}" for s, a, _ in CASES])
def test_a_mistake_is_one_line_and_exit_2_and_changes_nothing(place, script, args, says):
    before = snapshot(place["run"])
    values = {**{k: str(v) for k, v in place.items()}, "locked": str(held_lock(place))}
    args = [a.format(**values) for a in args]
    quiet = [q for q in QUIET if not any(a.startswith("logger") for a in args)]
    extra = ["debug=fast", *quiet] if script in ("train", "tune") else []
    if script == "train" and not any(a.startswith("hydra.run.dir") for a in args):
        extra.append(f"hydra.run.dir={place['root'] / 'new'}")
    if script == "tune":
        extra.append(f"hydra.sweep.dir={place['root'] / 'tune'}")
    elif "-m" in args:
        extra.append(f"hydra.sweep.dir={place['root'] / 'new'}")
    proc = run_script(f"{script}.py", [*args, *extra])
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stdout[-1500:] + proc.stderr[-1500:]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert says in lines[0], lines[0]
    assert proc.stdout.strip() == "", proc.stdout  # nothing else: no table, no warning before
    assert "Traceback" not in proc.stdout + proc.stderr
    assert snapshot(place["run"]) == before  # the finished run, .hydra/ and log included
    assert not (place["root"] / "new").exists()  # a rejected run leaves no directory behind
    assert not list(place["root"].glob("reference-*"))  # nor a pruning reference's
    assert not (place["root"] / "tune").exists()  # a rejected search leaves no study behind
    assert not place["marker"].exists()  # no planted payload ran


def test_the_table_has_at_least_40_mistakes_in_all_four_entry_points():
    assert len(CASES) >= 40 and {s for s, _, _ in CASES} == {"train", "tune", "eval", "plots"}


def test_a_planted_cifar_payload_is_not_even_unpickled_as_code(place, tmp_path):
    from src.data.sources import DatasetFileError, read_data_pickle

    with pytest.raises(DatasetFileError, match=r"references posix\.system|references os\.system"):
        read_data_pickle(place["root"] / "payload" / "cifar-10-batches-py" / "data_batch_1")
    assert not place["marker"].exists()


def test_a_planted_checkpoint_payload_is_refused(place, tmp_path):
    """torch.save of an object whose unpickling runs code: loaded with weights_only=True."""

    ckpt = tmp_path / "run"
    shutil.copytree(place["run"], ckpt)
    torch.save({"format": "trainkit-checkpoint-v1", "model": Payload(place["marker"])},
               ckpt / "checkpoint.pt")
    proc = run_script("eval.py", [f"checkpoint={ckpt}"])
    assert proc.returncode == 2 and "corrupt or unreadable" in proc.stderr, proc.stderr
    assert not place["marker"].exists()


def test_regenerated_cifar_files_are_read_with_a_warning(place, tmp_path):
    proc = train(tmp_path / "run", "dataset=cifar10", f"data_dir={place['root'] / 'regenerated'}",
                 "debug=fast", "dataset.val_size=3", "batch_size=4", "model=mlp", *QUIET)
    assert "differs from the published cifar10 file" in proc.stdout
    assert "reading it anyway" in proc.stdout


def test_eval_on_a_read_only_run_directory_says_so_before_it_evaluates(place, tmp_path):
    """A run directory on a read-only mount (permission bits say nothing to root: a real bind
    mount, remounted read-only): one line naming out=, and out= writes elsewhere."""
    ro = tmp_path / "ro"
    ro.mkdir()
    for cmd in (["mount", "--bind", str(place["run"]), str(ro)],
                ["mount", "-o", "remount,ro,bind", str(ro)]):
        made = subprocess.run(cmd, capture_output=True, text=True)
        if made.returncode != 0:
            subprocess.run(["umount", str(ro)], capture_output=True)
            pytest.skip(f"no read-only bind mount here ({made.stderr.strip()[:80]})")
    try:
        refused = run_script("eval.py", [f"checkpoint={ro}"])
        elsewhere = run_script("eval.py", [f"checkpoint={ro}", f"out={tmp_path / 'e.json'}"])
    finally:
        subprocess.run(["umount", str(ro)], check=True)
    assert refused.returncode == 2 and refused.stdout.strip() == "", refused.stdout
    (line,) = refused.stderr.strip().splitlines()
    assert "Read-only file system" in line and "out=<a writable file>" in line, line
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert json.loads((tmp_path / "e.json").read_text())["metrics"]["test_acc"] > 0


def test_tracebacks_are_there_for_developers_who_ask(place):
    proc = run_script("train.py", ["num_bits=0", "debug=fast", *QUIET,
                                   f"hydra.run.dir={place['root'] / 'dbg'}"],
                      env={**os.environ, "TRAINKIT_DEBUG": "1"})
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_ctrl_c_is_one_line_that_says_how_to_resume(tmp_path):
    run_dir = tmp_path / "run"
    proc = start("train.py", ["debug=fast", "epochs=200", "trainer.progress=false",
                              f"hydra.run.dir={run_dir}"], tmp_path / "log")
    # history.jsonl is created empty when the run is set up: wait for a trained epoch in it
    wait_for(lambda: (run_dir / "history.jsonl").exists() and (
        run_dir / "history.jsonl").read_text().strip(), what="the first epoch")
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    out = (tmp_path / "log").read_text()
    assert "Traceback" not in out and "KeyboardInterrupt" not in out
    (line,) = [x for x in out.splitlines() if x.startswith("interrupted:")]
    assert str(run_dir) in line and "same command again" in line
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "interrupted"
    hp, status = hparams_of_run(run_dir)  # TensorBoard: neither a success nor a failure
    assert hp["status"] == "interrupted" and status == Status.Value("STATUS_UNKNOWN")


@pytest.mark.parametrize("script", ["train", "tune"])
def test_ctrl_c_while_loading_is_one_line_and_writes_nothing(tmp_path, script):
    run_dir = tmp_path / "run"
    proc = start(f"{script}.py", ["debug=fast", *QUIET, f"hydra.run.dir={run_dir}",
                                  f"hydra.sweep.dir={tmp_path / 'sweep'}"], tmp_path / "log")
    # PyYAML's C extension is loaded by Hydra's imports, after the entry point has routed
    # Ctrl-C and long before any job starts (which takes seconds more)
    maps = Path(f"/proc/{proc.pid}/maps")
    wait_for(lambda: "_yaml" in maps.read_text(), what="the imports to begin")
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    out = (tmp_path / "log").read_text()
    assert "Traceback" not in out and "KeyboardInterrupt" not in out
    assert out.strip().splitlines() == [
        "interrupted before the run started: nothing was written; run the same command again "
        "to start it"]
    assert not run_dir.exists() and not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("script", ["train", "tune", "plots", "eval"])
def test_each_entry_point_has_its_own_help(script):
    proc = run_script(f"{script}.py", ["--help"])
    assert proc.returncode == 0 and proc.stdout.startswith(f"{script}.py:")
    words = {"train": ["Config groups", "optimizer", "epochs", "passes over the training set",
                       "track_samples", "full_train_eval"],
             "tune": ["Search space", "optimizer.lr", "storage", "study", "n_trials"],
             "plots": ["Figure kinds", "lr_stability", "phase_diagram", "group_by"],
             "eval": ["checkpoint", "splits", "eval.json"]}[script]
    for word in words:
        assert word in proc.stdout, word


def test_only_rank_0_prints_under_torchrun(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "train.py", "debug=fast", "device=cpu", *QUIET, f"hydra.run.dir={tmp_path / 'r'}"]
    out = subprocess.run(cmd, cwd=ROOT, text=True, capture_output=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("epoch 1/1 |") == 1 and out.stdout.count("run directory:") == 1


def test_without_a_terminal_no_progress_frames_reach_the_log(tmp_path):
    proc = run_script("train.py", ["debug=fast", "epochs=2", "logger=none",
                                   f"hydra.run.dir={tmp_path}"])  # progress bar left on
    assert proc.returncode == 0
    assert "\r" not in proc.stdout + proc.stderr and "it/s" not in proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-2].startswith("test accuracy: model ") and "ema_0.99" in lines[-2]
    assert lines[-1] == f"run directory: {tmp_path}"
    assert any(x.startswith("final evaluation: 3 model(s)") for x in lines)
