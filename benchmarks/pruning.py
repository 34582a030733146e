"""Measured inference speed-up of structurally pruned networks (filter_l1, PFP, ALDS), exported as
dense smaller models, against the unpruned network, in one run.

Each model is pruned once per method and keep ratio (no retraining: speed does not depend on the
weights' values), exported (src/pruning/export.py), checked against the masked network's outputs,
and timed against the unpruned network in alternating pairs (median ratio, smallest and largest
pair). PFP's sensitivities use `--samples` random inputs of the model's shape.

    .venv/bin/python benchmarks/pruning.py                    # resnet20 and vgg16_bn, CPU or GPU
    .venv/bin/python benchmarks/pruning.py --models resnet20 --keep 0.5 0.2 --batch 128
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src.models.resnet_cifar import resnet20  # noqa: E402
from src.models.vgg import vgg16_bn  # noqa: E402
from src.pruning.export import compare_speed, export, parameters  # noqa: E402
from src.pruning.flops import count_flops  # noqa: E402
from src.pruning.masks import Masks  # noqa: E402
from src.pruning.methods import FilterL1  # noqa: E402
from src.pruning.provable import ALDS, PFP  # noqa: E402

SHAPE = (3, 32, 32)


def tiny(shape: tuple[int, ...], classes: int) -> nn.Module:
    """A small conv net for smoke runs."""
    return nn.Sequential(nn.Conv2d(shape[0], 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, classes))


MODELS = {"resnet20": resnet20, "vgg16_bn": vgg16_bn, "bn_cnn": tiny}
METHODS = {"filter_l1": lambda samples: FilterL1(), "pfp": lambda samples: PFP(samples=samples),
           "alds": lambda samples: ALDS()}


class RandomBatches:
    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def batches(self, _: object):
        yield self.x, torch.zeros(len(self.x), dtype=torch.long, device=self.x.device)


def randomised(model: nn.Module) -> nn.Module:
    """BatchNorm statistics as after training (zero filters then leave constant channels)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.bias.normal_(0, 0.1)
    return model.eval()


def bench(name: str, method: str, keep: float, batch: int, pairs: int, samples: int,
          device: torch.device) -> dict:
    torch.manual_seed(0)
    reference = randomised(MODELS[name](SHAPE, 10).to(device))
    model = randomised(MODELS[name](SHAPE, 10).to(device))
    model.load_state_dict(reference.state_dict())
    masks = Masks(model)
    dense = masks.total
    data = SimpleNamespace(train_eval=RandomBatches(torch.randn(samples, *SHAPE, device=device)))
    if METHODS[method](samples)(model, masks, keep, data) is not None:  # ALDS: new layers
        masks = Masks(model)
    masks.apply()
    model.eval()
    small = export(model, masks)
    x = torch.randn(batch, *SHAPE, device=device)
    with torch.no_grad():
        diff = float((small(x) - model(x)).abs().max())
    flops = count_flops(model, SHAPE, masks)["flops_kept"] / count_flops(
        reference, SHAPE, Masks(reference))["flops"]
    return {"model": name, "method": method, "keep_target": keep, "keep": masks.kept() / dense,
            "flops_kept_fraction": flops, "params_reference": parameters(reference),
            "params": parameters(small), "max_abs_diff": diff,
            **compare_speed(reference, small, SHAPE, device, batch, pairs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet20", "vgg16_bn"],
                        choices=sorted(MODELS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--keep", nargs="+", type=float, default=[0.5, 0.2])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--pairs", type=int, default=9)
    parser.add_argument("--samples", type=int, default=64, help="PFP's sensitivity points")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON")
    args = parser.parse_args()
    device = torch.device(args.device)
    rows = []
    for name in args.models:
        for method in args.methods:
            for keep in args.keep:
                row = bench(name, method, keep, args.batch, args.pairs, args.samples, device)
                rows.append(row)
                print(f"{name:9s} {method:9s} keep {row['keep']:.3f}  FLOPs kept "
                      f"{row['flops_kept_fraction']:.3f}  params {row['params']:>9,} / "
                      f"{row['params_reference']:,}  speed-up {row['speedup']:.2f}x "
                      f"[{row['speedup_min']:.2f}, {row['speedup_max']:.2f}]", flush=True)
    results = {"machine": {"platform": platform.platform(), "torch": torch.__version__,
                           "device": str(device), "threads": torch.get_num_threads()},
               "rows": rows}
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
