"""dataset=image_folder against torchvision's ImageFolder + DataLoader, on a folder of PNG files
that this script writes (32x32, 10 classes).

Three measurements, each as ratios within one run (benchmarks/harness.py: rounds whose order
rotates, median with the smallest and largest round):
- the first read: decoding the folder into the uint8 cache, its MB/s against only reading the
  files' bytes;
- data delivery alone: augmented (random crop with padding 4, flip) normalised float batches on
  the device per second, with no model. The baseline is torchvision's ImageFolder with a
  DataLoader (2 workers, pinned memory on a GPU, the same augmentation as PIL transforms),
  which decodes the files every epoch; ours device-resident, and ours streamed from the uint8
  cache by 2 DataLoader workers;
- end to end: ResNet-20 training steps fed by each pipeline (the model's arithmetic dominates
  on a CPU).

    .venv/bin/python benchmarks/image_folder.py                    # 50k images, CPU or GPU
    .venv/bin/python benchmarks/image_folder.py --images 2000 --batches 10 --steps 3 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from harness import interleave, machine, rates, ratio  # noqa: E402

from src.data.image_folder import image_folder  # noqa: E402
from src.data.loader import DeviceData  # noqa: E402
from src.models.resnet_cifar import resnet20  # noqa: E402

MEAN, STD = (125.3, 123.0, 113.9), (63.0, 62.1, 66.7)


def write_folder(root: Path, images: int, classes: int = 10) -> None:
    """`images` 32x32 PNG files in train/<class>/, and a tenth as many in test/<class>/."""
    from PIL import Image
    rng = np.random.default_rng(0)
    for split, n in (("train", images), ("test", max(images // 10, classes))):
        for i in range(n):
            c = i % classes
            folder = root / split / f"c{c}"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = (rng.integers(0, 200, (32, 32, 3)) + 5 * c).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")


def torchvision_loader(root: Path, batch: int, device: torch.device) -> torch.utils.data.DataLoader:
    import torchvision.transforms as T
    from torchvision.datasets import ImageFolder
    transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize([m / 255 for m in MEAN], [s / 255 for s in STD])])
    return torch.utils.data.DataLoader(
        ImageFolder(str(root / "train"), transform=transform), batch_size=batch, shuffle=True,
        drop_last=True, num_workers=2, pin_memory=device.type == "cuda",
        persistent_workers=True)  # started once: the baseline pays no start-up per pass


def take(batches: Iterator, count: int, device: torch.device,
         step: Callable[[torch.Tensor, torch.Tensor], None]) -> int:
    """Run `step` on the first `count` batches (moved to the device); the samples seen."""
    seen = 0
    for i, (x, y) in enumerate(batches):
        if i == count:
            break
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        step(x, y)
        seen += len(y)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--batches", type=int, default=200,
                        help="batches per data-delivery measurement")
    parser.add_argument("--steps", type=int, default=10, help="ResNet-20 steps per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--root", type=Path, default=None, help="where the folder is written "
                        "(default: a temporary folder, removed at the end)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON")
    args = parser.parse_args()
    device = torch.device(args.device)
    scratch = Path(tempfile.mkdtemp(prefix="image_folder_bench-"))
    root = args.root or scratch / "images"
    try:
        if not (root / "train").is_dir():
            t0 = time.perf_counter()
            write_folder(root, args.images)
            print(f"wrote {args.images} PNG files in {time.perf_counter() - t0:.1f} s")
        result = run(args, root, scratch / "cache", device)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


def run(args: argparse.Namespace, root: Path, cache: Path, device: torch.device) -> dict:
    files = sorted((root / "train").rglob("*.png")) + sorted((root / "test").rglob("*.png"))
    t0 = time.perf_counter()
    size = sum(len(f.read_bytes()) for f in files)
    read_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    raw = image_folder(root=str(root), cache_dir=str(cache), val_size=args.batch)
    cache_s = time.perf_counter() - t0
    first = {"files": len(files), "mb": size / 1e6, "cache_s": cache_s,
             "cache_mb_s": size / 1e6 / cache_s, "read_only_s": read_s,
             "read_only_mb_s": size / 1e6 / read_s, "share_of_read_speed": read_s / cache_s}
    print(f"first read: {len(files)} files, {size / 1e6:.1f} MB decoded and cached in "
          f"{cache_s:.1f} s ({first['cache_mb_s']:.1f} MB/s; reading the bytes alone: "
          f"{first['read_only_mb_s']:.0f} MB/s)")

    settings = dict(mean=raw.mean, std=raw.std, batch_size=args.batch, shuffle=True,
                    drop_last=True, crop_padding=4, flip=True, device=device)
    resident = DeviceData(raw.train_x.to(device, copy=True), raw.train_y, **settings)
    streamed = DeviceData(raw.train_x, raw.train_y, **settings, stream=raw.files["train"],
                          stream_workers=2)
    epoch = [0]

    def ours(data: DeviceData) -> Iterator:
        epoch[0] += 1
        return data.batches(torch.Generator(device=device).manual_seed(epoch[0]))

    def cost(batches: Callable[[], Iterator], count: int,
             step: Callable[[torch.Tensor, torch.Tensor], None]) -> Callable[[], float]:
        def measure() -> float:  # seconds per sample, the loader's start-up included
            t0 = time.perf_counter()
            seen = take(batches(), count, device, step)
            return (time.perf_counter() - t0) / seen
        return measure

    count = min(args.batches, len(resident))
    tv = torchvision_loader(root, args.batch, device)
    nothing = lambda x, y: None  # noqa: E731 - data delivery alone
    delivery = interleave({"torchvision": cost(lambda: iter(tv), count, nothing),
                           "resident": cost(lambda: ours(resident), count, nothing),
                           "streamed": cost(lambda: ours(streamed), count, nothing)},
                          args.rounds)
    data = {"batches": count, "batch": args.batch, **rates(delivery, "img_s"),
            "resident": ratio(delivery["torchvision"], delivery["resident"]),
            "streamed": ratio(delivery["torchvision"], delivery["streamed"])}
    print(f"data delivery, {count} batches of {args.batch}: torchvision "
          f"{data['torchvision_img_s']:.0f} img/s; ours resident {data['resident_img_s']:.0f} "
          f"({data['resident']['ratio']:.1f}x), streamed {data['streamed_img_s']:.0f} "
          f"({data['streamed']['ratio']:.1f}x)")

    torch.manual_seed(0)
    model = resnet20((3, 32, 32), 10).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    def train_step(x: torch.Tensor, y: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    steps = min(args.steps, len(resident))
    end = interleave({"torchvision": cost(lambda: iter(tv), steps, train_step),
                      "resident": cost(lambda: ours(resident), steps, train_step)},
                     args.rounds)
    model_alone = statistics.median(end["resident"]) - statistics.median(delivery["resident"])
    e2e = {"steps": steps, **rates(end, "img_s"),
           "resident": ratio(end["torchvision"], end["resident"]),
           "model_share_of_step": model_alone / statistics.median(end["resident"])}
    print(f"end to end, ResNet-20, {steps} steps: torchvision {e2e['torchvision_img_s']:.0f} "
          f"img/s, ours resident {e2e['resident_img_s']:.0f} ({e2e['resident']['ratio']:.2f}x); "
          f"the model is {100 * e2e['model_share_of_step']:.0f}% of our step")
    return {"machine": machine(), "device": str(device), "images": len(raw.train_y),
            "rounds": args.rounds, "first_read": first, "delivery": data, "end_to_end": e2e}


if __name__ == "__main__":
    main()
