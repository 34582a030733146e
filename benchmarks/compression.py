"""Cost of compressed multi-worker training and of bit-packing, as ratios measured in one run.

1. Time per training sample of 1-bit compressed_sgd_vote with W simulated workers, fused
   (compression.fused=true) and eager (false), relative to plain SGD at the same per-worker batch
   (the train loop's own samples/s from history.jsonl, median of the epochs after the first; all
   runs use the same model, data and device). The three variants run in `--rounds` rounds whose
   order rotates (benchmarks/harness.py); each ratio is the median over rounds with its min-max.
2. pack + unpack throughput in elements per second for several bit widths.

    .venv/bin/python benchmarks/compression.py                      # CPU or the visible GPU
    .venv/bin/python benchmarks/compression.py --models resnet20 --workers 4 --batch 128
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from harness import interleave, machine, rates, ratio  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from src.cli.entry import register_resolvers  # noqa: E402
from src.compression import packing  # noqa: E402
from src.compression.fused import compiler_missing  # noqa: E402
from src.core.files import read_history  # noqa: E402
from src.tasks.classify import run  # noqa: E402


def samples_per_s(overrides: list[str]) -> float:
    """Median train-loop samples/s over the epochs after the first."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    with tempfile.TemporaryDirectory() as tmp:
        run(cfg, Path(tmp))
        rates = sorted(r["samples_per_s"] for r in read_history(Path(tmp))[1:])
    return rates[len(rates) // 2]


# Input shapes of the setups the models come from: the MNIST CNN of the compressed-SGD study
# (3.2M parameters at 1x28x28) and the CIFAR ResNets.
SHAPES = {"mnist_cnn": "[1,28,28]"}


def training_ratio(model: str, workers: int, batch: int, samples: int, epochs: int,
                   device: str, rounds: int) -> dict:
    shape = SHAPES.get(model, "[3,32,32]")
    common = [f"model={model}", "dataset=fake", f"dataset.source.shape={shape}",
              "dataset.augment.crop_padding=0", f"dataset.source.num_train={samples + 256}",
              "dataset.source.num_test=256", "dataset.val_size=256", f"epochs={epochs}",
              f"batch_size={batch}", "averaging=none", f"device={device}",
              "trainer.progress=false", "logger=none", "trainer.log_every=1000"]
    vote = [*common, "optimizer=compressed_sgd_vote", "num_bits=1", f"workers={workers}"]
    variants = {"sgd": [*common, "optimizer=sgd", "optimizer.lr=0.01"],
                "vote_eager": [*vote, "compression.fused=false"]}
    no_fusing = compiler_missing(torch.device(device))
    if no_fusing is None:
        variants["vote_fused"] = [*vote, "compression.fused=true"]
    costs = interleave({name: (lambda o=o: 1.0 / samples_per_s(o)) for name, o in variants.items()},
                       rounds, warmup=False)  # every run skips its own first epoch
    row = {"model": model, "workers": workers, "batch_per_worker": batch, "rounds": rounds,
           **rates(costs, "samples_per_s"),
           "eager": ratio(costs["vote_eager"], costs["sgd"])}
    if no_fusing is None:
        row["fused"] = ratio(costs["vote_fused"], costs["sgd"])
        row["fused_speedup"] = ratio(costs["vote_eager"], costs["vote_fused"])
    else:
        row["fused_skipped"] = no_fusing
    return row


def packing_throughput(device: str, n: int = 1 << 22, repeats: int = 5) -> list[dict]:
    out = []
    dev = torch.device(device)
    for bits in (1, 2, 3, 4, 8):
        codes = torch.randint(0, 2**bits, (n,), device=dev, dtype=torch.int32)
        packing.unpack(packing.pack(codes, 0, bits), 0, bits, n)  # warm-up
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(repeats):
            back = packing.unpack(packing.pack(codes, 0, bits), 0, bits, n)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - t0) / repeats
        assert torch.equal(back, codes)
        out.append({"bits": bits, "elements": n, "pack_unpack_elements_per_s": n / seconds})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mnist_cnn", "resnet20"])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--samples", type=int, default=2048, help="training samples per epoch")
    parser.add_argument("--epochs", type=int, default=3, help="per run; the first is skipped")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of all variants")
    parser.add_argument("--packing-elements", type=int, default=1 << 22)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON")
    args = parser.parse_args()
    register_resolvers()
    device_name = (torch.cuda.get_device_name() if args.device.startswith("cuda")
                   else f"CPU, {torch.get_num_threads()} threads")
    results = {"device": device_name, "machine": machine(), "training": [],
               "packing": packing_throughput(args.device, args.packing_elements)}
    for model in args.models:
        results["training"].append(training_ratio(model, args.workers, args.batch, args.samples,
                                                  args.epochs, args.device, args.rounds))
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
