"""Which timm architectures train in a stack (hydra/launcher=stacked): the smallest variant of
each family, built as model=timm builds it (10 classes) and given the trial pass that the
stacked launcher makes (src/engine/stack.py: unstackable, two slots, forward and backward).
A family is the leading letters of a name (resnet10t -> resnet, convnext_atto -> convnext).

    .venv/bin/python benchmarks/timm_stacking.py --out benchmarks/results/cpu/timm_stacking.json
    .venv/bin/python benchmarks/timm_stacking.py --families resnet vit convnext
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

import timm
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src.engine.stack import unstackable  # noqa: E402


def family(name: str) -> str:
    return re.match(r"[a-z]+", name).group(0)  # type: ignore[union-attr]


def size(name: str) -> int:
    """Parameters of `name`, counted on the meta device (nothing allocated); huge if it fails."""
    try:
        with torch.device("meta"):
            model = timm.create_model(name, num_classes=10)
        return sum(p.numel() for p in model.parameters())
    except Exception:  # a builder that computes with its tensors while it builds
        return 1 << 62


def build(name: str, pixels: int) -> tuple[torch.nn.Module, tuple[int, int, int]]:
    """The network with 10 classes, at `pixels` square where it takes an image size."""
    try:
        model = timm.create_model(name, num_classes=10, img_size=pixels)
        return model, (3, pixels, pixels)
    except TypeError:  # no img_size: convolutional networks take any size
        model = timm.create_model(name, num_classes=10)
        shape = model.pretrained_cfg.get("input_size", (3, pixels, pixels))
        fixed = model.pretrained_cfg.get("fixed_input_size", False)
        return model, tuple(shape) if fixed else (3, pixels, pixels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="*", default=None, help="default: every family")
    parser.add_argument("--pixels", type=int, default=64)
    parser.add_argument("--max-params", type=float, default=30e6)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    by_family: dict[str, list[str]] = defaultdict(list)
    for name in timm.list_models():
        by_family[family(name)].append(name)
    chosen = sorted(args.families or by_family)
    rows = []
    t0 = time.perf_counter()
    for fam in chosen:
        sizes = sorted((size(n), n) for n in by_family[fam])
        params, name = sizes[0]
        row: dict = {"family": fam, "name": name, "params": params}
        if params > args.max_params:
            row.update(result="skipped", reason=f"smallest variant over {args.max_params:.0e} "
                                                f"parameters (or not buildable on meta)")
        else:
            try:
                model, shape = build(name, args.pixels)
                why = unstackable(model, torch.randn(2, *shape))
                row.update(result="stacks" if why is None else "alone", reason=why,
                           input=list(shape))
            except Exception as e:  # the network itself fails at this size: not ours to judge
                row.update(result="skipped", reason=f"does not build or run: "
                                                    f"{type(e).__name__}: {str(e)[:120]}")
        rows.append(row)
        print(f"{fam:<16} {name:<36} {row['result']:<8} {(row['reason'] or '')[:90]}",
              flush=True)
    tried = [r for r in rows if r["result"] != "skipped"]
    alone = [r for r in tried if r["result"] == "alone"]
    print(f"{len(tried)} families tried, {len(tried) - len(alone)} stack, {len(alone)} run "
          f"alone, {len(rows) - len(tried)} skipped, in {time.perf_counter() - t0:.0f} s")
    if args.out:
        args.out.write_text(json.dumps({"timm": timm.__version__, "torch": torch.__version__,
                                        "pixels": args.pixels, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
