"""Names that users bring from the code bases this framework unites, and settings that were
removed, each with what to type here instead.

One table serves the command line's hints (src/cli/entry.py: `global_seed=1234` says
`seed=1234`; `--lr 0.1` says `optimizer.lr=0.1`) and docs/migrating.md, whose tables
tests/unit/cli/test_names.py holds equal to this one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Name:
    """theirs: a key (global_seed) or an argparse flag (--lr) as typed there; ours: the override
    here, with {} where the value goes; study: where the name comes from."""

    theirs: str
    ours: str
    study: str


AVERAGING = "the weight-averaging code (seed 003)"
COMPRESSED = "the compressed-SGD code (seed 000)"
REGIMES = "the regimes-of-SGD code (seed 001)"

FOREIGN = (
    Name("global_seed", "seed={}", AVERAGING),
    Name("averaged.decay", "averaging.decays=[{}]", AVERAGING),
    Name("--lr", "optimizer.lr={}", COMPRESSED),
    Name("--num_bits", "num_bits={}", COMPRESSED),
    Name("--decay", "compression.compressor.decay={}", COMPRESSED),
    Name("--num_workers", "workers={}", COMPRESSED),
    Name("--epochs", "epochs={}", COMPRESSED),
    Name("--batch_size", "batch_size={}", COMPRESSED),
    Name("--binning", "compression.compressor.binning={}", COMPRESSED),
    Name("--arch", "task=regimes model=mf_mlp (their mlp; or perceptron, mnas)", REGIMES),
    Name("--act", "model.activation={}", REGIMES),
    Name("--h", "model.width={}", REGIMES),
    Name("--L", "model.depth={}", REGIMES),
    Name("--alpha", "task.alpha={}", REGIMES),
    Name("--dataset", "task=regimes dataset={}", REGIMES),
    Name("--ptr", "dataset.ptr={}", REGIMES),
    Name("--pte", "dataset.pte={}", REGIMES),
    Name("--loss", "task.loss={}", REGIMES),
    Name("--dynamics", "task.dynamics={}", REGIMES),
    Name("--bs", "batch_size={}", REGIMES),
    Name("--dt", "task.dt={}", REGIMES),
    Name("--temp", "task.temp={}", REGIMES),
    Name("--ckpt_grad_stats", "task.ckpt_grad_stats={}", REGIMES),
    Name("--max_wall", "task.max_wall={}", REGIMES),
    Name("--seed_init", "seed={}", REGIMES),
    Name("--data_chi", "dataset.source.chi={}", REGIMES),
)

# Settings this framework had and replaced: what to type now.
REMOVED = {
    "trainer.tensorboard": "logger=tensorboard (the logger group: logger=none for no tracker, "
                           "logger=[tensorboard,csv] for several)",
}


def foreign(name: str) -> Name | None:
    """The entry of `name` (a key or a flag as typed), or None."""
    return next((n for n in FOREIGN if n.theirs == name), None)


def instead(name: Name, value: str | None) -> str:
    """What to type here for `name` given `value` (none given: <value>)."""
    return name.ours.replace("{}", value if value else "<value>")
