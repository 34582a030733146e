"""Training throughput of the framework against the standard PyTorch pipeline and a bare loop.

Measured in one run, on one device, as ratios:
1. train.py's loop (device-resident CIFAR-10 read from the real pickled-batch files, batched
   on-device augmentation, trainer defaults: bf16 + channels_last on a GPU) against the standard
   pipeline (torchvision's CIFAR10 class on the same files, DataLoader with 2 workers and pinned
   memory, RandomCrop + Flip + ToTensor + Normalize, fp32), images/s;
2. the overhead of EMA with 5 decays against plain training;
3. the framework's loop against a bare hand-written loop over the same device-resident batches
   (same model, optimizer, precision), i.e. the cost of the framework itself.
The CIFAR files are random images written by this script in the real format to a temp folder.
4. with `--compile MODE`, train.py's loop with trainer.compile=MODE (reduce-overhead: CUDA graphs,
   for small nets on a GPU) against the eager one.
The variants (ours, ours with EMA x5, bare loop, standard pipeline, and ours compiled) run in
`--rounds` rounds whose order rotates (benchmarks/harness.py); each ratio is the median over
rounds with its min-max.

    .venv/bin/python benchmarks/throughput.py                          # resnet20, batch 128
    .venv/bin/python benchmarks/throughput.py --models resnet20 resnet56 vgg16_bn \\
        --batches 128 512 --images 50000                                 # the full table (GPU)
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from harness import interleave, machine, rates, ratio  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from src.cli.entry import register_resolvers  # noqa: E402
from src.core.files import read_history  # noqa: E402
from src.tasks.classify import run  # noqa: E402

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def write_cifar(root: Path, images: int, test: int) -> None:
    """Random images in CIFAR-10's python format: 5 training batches and a test batch."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    per = images // 5
    for name, n in [*((f"data_batch_{i}", per) for i in range(1, 6)), ("test_batch", test)]:
        batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 "labels": rng.integers(0, 10, n).tolist()}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def standard_pipeline(model_name: str, batch: int, root: Path, device: torch.device,
                      epochs: int) -> float:
    """images/s of the usual recipe (last epoch; the first ones warm up workers and kernels)."""
    import torchvision
    from torch.utils.data import DataLoader
    from torchvision import transforms as T

    class FilesAsWritten(torchvision.datasets.CIFAR10):
        def _check_integrity(self) -> bool:  # the files are ours, not the official ones
            return True

        def _load_meta(self) -> None:  # class names only; the md5 check would fail likewise
            self.classes = [str(i) for i in range(10)]

    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize(MEAN, STD)])
    data = FilesAsWritten(str(root), train=True, transform=tf)
    loader = DataLoader(data, batch_size=batch, shuffle=True, drop_last=True, num_workers=2,
                        pin_memory=device.type == "cuda", persistent_workers=True)
    model = build_model(model_name, device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return timed_epochs(epochs, device, lambda: loader, step)


def timed_epochs(epochs: int, device: torch.device, batches: Callable[[], Iterable],
                 step: Callable[[torch.Tensor, torch.Tensor], None]) -> float:
    """images/s of the last of `epochs` passes over batches(), running step(x, y) on each."""
    rate = 0.0
    for _ in range(epochs):
        sync(device)
        t0, seen = time.perf_counter(), 0
        for x, y in batches():
            step(x, y)
            seen += len(y)
        sync(device)
        rate = seen / (time.perf_counter() - t0)
    return rate


def build_model(name: str, device: torch.device) -> torch.nn.Module:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={name}"])
    from hydra.utils import instantiate

    torch.manual_seed(0)
    return instantiate(cfg.model, input_shape=(3, 32, 32), num_classes=10).to(device)


def framework(overrides: list[str]) -> float:
    """train.py's own samples/s (last epoch)."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    with tempfile.TemporaryDirectory() as tmp:
        run(cfg, Path(tmp))
        return read_history(Path(tmp))[-1]["samples_per_s"]


def bare_loop(overrides: list[str], epochs: int) -> float:
    """The same model, data, optimizer and precision in a minimal hand-written loop."""
    from hydra.utils import instantiate

    from src.data.bundle import build_data
    from src.engine.distributed import resolve_device
    from src.engine.fast_path import FastPath

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    device = resolve_device(cfg.device)
    data = build_data(cfg.dataset, cfg.batch_size, 1024, device)
    torch.manual_seed(0)
    model = instantiate(cfg.model, input_shape=data.input_shape, num_classes=10).to(device)
    fast = FastPath.from_config(cfg.trainer, device, model, compressed=False)
    model = fast.prepare(model)
    opt = instantiate(cfg.optimizer)(model.parameters())
    loss_fn = torch.nn.CrossEntropyLoss()
    gen = torch.Generator(device=device).manual_seed(0)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        with fast.autocast():
            loss = loss_fn(model(fast.inputs(x)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return timed_epochs(epochs, device, lambda: data.train.batches(gen), step)


def variants(common: list[str], model: str, batch: int, root: Path, device: torch.device,
             epochs: int, compile_mode: str | None) -> dict[str, Callable[[], float]]:
    """Seconds per image (the last epoch) of each variant, one call a measurement."""
    ema = ["averaging=ema", "averaging.decays=[0.9,0.99,0.999,0.9995,0.9997]"]
    out = {"ours": lambda: 1.0 / framework([*common, "averaging=none"]),
           "ours_ema5": lambda: 1.0 / framework([*common, *ema]),
           "bare_loop": lambda: 1.0 / bare_loop([*common, "averaging=none"], epochs),
           "standard": lambda: 1.0 / standard_pipeline(model, batch, root, device, epochs)}
    if compile_mode:
        out["ours_compiled"] = lambda: 1.0 / framework([*common, "averaging=none",
                                                        f"trainer.compile={compile_mode}"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet20"])
    parser.add_argument("--batches", nargs="+", type=int, default=[128])
    parser.add_argument("--images", type=int, default=5000, help="training images per epoch")
    parser.add_argument("--epochs", type=int, default=2, help="the last one is measured")
    parser.add_argument("--eval-images", type=int, default=1000,
                        help="validation and test images (evaluated, not timed)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of all variants")
    parser.add_argument("--compile", default=None, metavar="MODE",
                        help="also time trainer.compile=MODE (e.g. reduce-overhead)")
    parser.add_argument("--compile-models", nargs="+", default=None,
                        help="the models --compile applies to (default: all)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    register_resolvers()
    device = torch.device(args.device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        write_cifar(Path(tmp), args.images + args.eval_images, args.eval_images)
        for model in args.models:
            for batch in args.batches:
                common = [f"model={model}", "dataset=cifar10", f"data_dir={tmp}",
                          f"dataset.val_size={args.eval_images}", f"epochs={args.epochs}",
                          f"batch_size={batch}", f"device={args.device}", "optimizer.lr=0.05",
                          "trainer.progress=false", "logger=none",
                          "trainer.log_every=100000", "scheduler=constant"]
                # Costs are seconds per image; every variant warms up in its own first epochs.
                compiled = args.compile if model in (args.compile_models or [model]) else None
                costs = interleave(variants(common, model, batch, Path(tmp), device, args.epochs,
                                            compiled),
                                   args.rounds, warmup=False)
                img_s = rates(costs, "img_s")
                rows.append({"model": model, "batch": batch, "rounds": args.rounds, **img_s,
                             "vs_standard": ratio(costs["standard"], costs["ours"]),
                             "vs_bare": ratio(costs["bare_loop"], costs["ours"]),
                             "ema5_cost": ratio(costs["ours_ema5"], costs["ours"]),
                             "epoch_s_50k_ema5": 50_000 / img_s["ours_ema5_img_s"]})
                if compiled:
                    rows[-1]["compile_mode"] = compiled
                    rows[-1]["compiled_vs_eager"] = ratio(costs["ours"], costs["ours_compiled"])
                print(json.dumps(rows[-1]), flush=True)
    name = torch.cuda.get_device_name() if device.type == "cuda" else \
        f"CPU, {torch.get_num_threads()} threads"
    result = {"device": name, "machine": machine(), "images_per_epoch": args.images,
              "rows": rows}
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
