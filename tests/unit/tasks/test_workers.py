"""Simulated workers, real workers (torchrun + gloo + the DDP hook) and the seed-000 commands."""

from __future__ import annotations

import pytest

from tests.helpers.runs import SMALL_FAKE, compose_train, summary


@pytest.mark.parametrize("preset", ["csgd_compressed_sgd", "csgd_sgd", "csgd_sign_sgd"])
def test_seed_000_presets_run_with_debug_fast_on_any_dataset(tmp_path, preset):
    from src.tasks.classify import run

    seed_setup = compose_train([f"experiment={preset}"])
    assert seed_setup.batch_size == 64 and seed_setup.model._target_.endswith("mnist_cnn")
    assert seed_setup.dataset.name == "mnist" and not seed_setup.dataset.normalize
    cfg = compose_train([f"experiment={preset}", "debug=fast", *SMALL_FAKE, "device=cpu",
                         "trainer.progress=false", "logger=none"])
    run(cfg, tmp_path)
    assert summary(tmp_path)["status"] == "completed"


def test_signum_sends_the_sign_of_each_workers_momentum():
    cfg = compose_train(["optimizer=signum_vote"])
    assert cfg.compression.worker_momentum == 0.9 and cfg.workers == 2
    assert cfg.compression.compressor._target_.endswith("Sign")
