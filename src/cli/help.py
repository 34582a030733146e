"""Each entry point's own --help: what it does, its main keys with their defaults and one line
each (read from the comments of its config file), and examples."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence
from pathlib import Path

from src.core.files import CONF, GROUPS


def key_lines(config: Path) -> list[str]:
    """'key = default   what it is' for each commented top-level key of a config file."""
    lines, out = config.read_text().splitlines(), []
    for i, line in enumerate(lines):
        m = re.match(r"^([A-Za-z_][\w.]*):\s*(.*?)\s+#\s*(.*)$", line)
        if not m:
            continue
        key, default, words = m.groups()
        for more in lines[i + 1:]:  # comments continued on the next lines, aligned under it
            cont = re.match(r"^\s{8,}#\s*(.*)$", more)
            if not cont:
                break
            words += " " + cont.group(1)
        left = f"{key:<14} {default or '-'}"
        out.append(textwrap.fill(f"{left:<37} {' '.join(words.split())}", width=98,
                                 initial_indent="  ", subsequent_indent=" " * 40))
    return out


def group_lines(extra: Sequence[Path] = ()) -> list[str]:
    """Each group's options, those of the config folders `extra` (--config-dir) beside ours."""
    out = []
    for group in GROUPS:
        options = sorted({p.stem for d in (CONF, *extra) for p in (Path(d) / group).glob("*.yaml")})
        out.append(textwrap.fill(f"{group:<12} {', '.join(options)}", width=98,
                                 initial_indent="  ", subsequent_indent=" " * 15))
    return out


def train_help(extra: Sequence[Path] = ()) -> str:
    return "\n".join([
        "train.py: train one model (or, with -m, a sweep); writes history.jsonl, summary.json,",
        "TensorBoard events and checkpoints into outputs/runs/<overrides>. Running the same",
        "command again resumes the run (a finished one is reused).",
        "",
        "Config groups (group=option; conf/<group>/<option>.yaml):", *group_lines(extra),
        "",
        "Main keys (key=value; dotted keys reach into a group, e.g. optimizer.lr=0.1):",
        *key_lines(CONF / "train.yaml"),
        "",
        "Training-loop keys (trainer.<key>=value, conf/trainer/default.yaml):",
        *key_lines(CONF / "trainer" / "default.yaml"),
        "",
        "Examples:",
        "  python train.py model=resnet20 dataset=cifar10 averaging.decays=[0.999,0.9995]",
        "  python train.py -m optimizer=sgd,adam seed=0,1,2      # a sweep: 6 runs",
        "  python train.py debug=fast                             # a tiny smoke run",
        "",
        "--cfg job prints the composed config; TRAINKIT_DEBUG=1 shows tracebacks of errors.",
    ])


def tune_help(extra: Sequence[Path] = ()) -> str:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("tune", return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    space = [f"  {k:<26} {v}" for k, v in sweeper.params.items()]
    return "\n".join([
        "tune.py: an Optuna search over train.py's settings. Each trial is one train.py run in",
        "outputs/tune/<study>/<overrides>; the best one becomes outputs/tune/<study>/experiment/",
        "best.yaml and the train.py command that reproduces its score is printed.",
        "",
        "Search space (hydra.sweeper.params.<key>=..., or a sweep override such as",
        "optimizer.lr='tag(log,interval(1e-4,1))' on the command line):", *space,
        "",
        f"  objective      {cfg.objective:<22} the summary.json metric; accuracies are "
        f"maximised, the rest minimised (hydra.sweeper.direction)",
        f"  n_trials       {sweeper.n_trials:<22} trials this process runs "
        f"(hydra.sweeper.n_trials; N processes on one storage run N x n_trials)",
        "  n_jobs         launcher's n_jobs       trials in flight at all times "
        "(hydra.sweeper.n_jobs; hydra.sweeper.asynchronous=false: in batches)",
        "  study          <dataset>-<model>-<objective>-<digest of the search> "
        "(hydra.sweeper.study_name)",
        "  storage        outputs/tune/<study>/optuna.db (hydra.sweeper.storage; "
        "postgresql://user@host/db to share it across machines)",
        f"  sampler        {sweeper.sampler._target_.split('.')[-1]:<22} "
        f"hydra/sweeper/sampler=tpe|random|cmaes|grid|nsgaii; hydra.sweeper.sampler.seed=0 "
        f"for a reproducible fresh study",
        f"  pruner         {sweeper.pruner._target_.split('.')[-1]:<22} "
        f"hydra/sweeper/pruner=none|median|percentile|successive_halving|hyperband: stops "
        f"a trial early on its objective per epoch",
        f"  dead trials    marked failed at once when their tune.py process is gone from this "
        f"host, else after {sweeper.grace_period} s without a heartbeat "
        f"(hydra.sweeper.retry_dead=N retries them)",
        "",
        "Examples:",
        "  python tune.py hydra.sweeper.n_trials=50 objective=ema_0.99/val_acc model=resnet20",
        "  python tune.py hydra/launcher=workers hydra.launcher.n_jobs=2  # 2 trials at a time",
        "  python tune.py hydra/sweeper/pruner=median   # stop trials worse than the median",
        "  python tune.py hydra/launcher=submitit_slurm hydra.launcher.partition=gpu",
        "",
        "Every train.py key and group works here too (python train.py --help lists them).",
    ])


def plots_help(extra: Sequence[Path] = ()) -> str:
    from src.analysis.figures import KINDS

    return "\n".join([
        "plots.py: figures and tables from run directories, into out_dir (PNG, PDF and the",
        "JSON of what was drawn). Runs are grouped by the settings that differ; seeds are",
        "pooled; runs a figure does not apply to are left out with a note.",
        "",
        "Figure kinds (figure=...):",
        *(textwrap.fill(f"{name:<14} {words}", width=98, initial_indent="  ",
                        subsequent_indent=" " * 17) for name, (_, words) in KINDS.items()),
        "",
        "Keys:", *key_lines(CONF / "plots.yaml"),
        "",
        "Examples:",
        "  python plots.py runs='outputs/runs/*' figure=curves metric=ema_0.99/val_acc",
        "  python plots.py runs='outputs/runs/*optimizer.lr=*' figure=lr_stability",
    ])


def eval_help(extra: Sequence[Path] = ()) -> str:
    return "\n".join([
        "eval.py: evaluate a run's checkpoint (the raw model and every averaged one, final and",
        "best states) without augmentation; prints a table and writes <run dir>/eval.json",
        "(or the file out= names).",
        "",
        "Keys:", *key_lines(CONF / "eval.yaml"),
        "",
        "Example:",
        "  python eval.py checkpoint=outputs/runs/default splits=[val,test]",
    ])
