"""Final evaluation of the seed-003 study, one state at a time against all states together.

The study's final evaluation tests the raw model and 5 EMA models, each in its final and its
best state (12 distinct states), on the train, val and test splits. The baseline loads each
state into a copy of the model and evaluates it (src/engine/evaluation.py: evaluate, the code
path before batched evaluation); the candidate evaluates every state in one pass over each batch
(evaluate_states: stacked states under torch.func's vmap). Both run in alternating pairs
(benchmarks/harness.py) and must give the same metrics.

    .venv/bin/python benchmarks/evaluation.py                         # CPU or the visible GPU
    .venv/bin/python benchmarks/evaluation.py --images 10000 --batch 1000 --pairs 5
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from harness import alternate, machine  # noqa: E402

from src.data.loader import DeviceData  # noqa: E402
from src.engine.evaluation import evaluate, evaluate_states  # noqa: E402
from src.engine.trainer import load_state  # noqa: E402
from src.models.mlp import mlp  # noqa: E402
from src.models.resnet_cifar import resnet20, resnet56  # noqa: E402

MODELS = {"resnet20": resnet20, "resnet56": resnet56,
          "mlp": lambda shape, classes: mlp(shape, classes, width=64)}


def states_of(model: torch.nn.Module, count: int) -> list[dict[str, torch.Tensor]]:
    """`count` distinct states of `model` (its weights perturbed), as EMA and best states are."""
    out = []
    for i in range(count):
        g = torch.Generator().manual_seed(i)
        out.append({k: (v + 0.01 * torch.randn(v.shape, generator=g).to(v)).abs()
                    if "running_var" in k else
                    (v + 0.01 * torch.randn(v.shape, generator=g).to(v)
                     if v.is_floating_point() else v.clone())
                    for k, v in model.state_dict().items()})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20", choices=sorted(MODELS))
    parser.add_argument("--decays", type=int, default=5)
    parser.add_argument("--images", type=int, default=2000, help="images per split (3 splits)")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    shape = (3, 32, 32)
    model = MODELS[args.model](shape, 10).to(device).eval()
    states = states_of(model, 2 * (1 + args.decays))  # raw + EMAs, final and best
    g = torch.Generator().manual_seed(0)
    splits = [DeviceData(torch.randint(0, 256, (args.images, *shape), generator=g,
                                       dtype=torch.uint8).to(device),
                         torch.randint(0, 10, (args.images,), generator=g).to(device),
                         (125.0, 123.0, 114.0), (63.0, 62.0, 66.0), args.batch, False, False)
              for _ in range(3)]
    shadow = MODELS[args.model](shape, 10).to(device)

    def one_at_a_time() -> list[list[dict]]:
        out = []
        for state in states:
            load_state(shadow, state)
            out.append([evaluate(shadow, split) for split in splits])
        return out

    def together() -> list[list[dict]]:
        per_split = [evaluate_states(model, states, split) for split in splits]
        return [[per_split[j][i] for j in range(len(splits))] for i in range(len(states))]

    a, b = one_at_a_time(), together()
    acc_equal = all(x["acc"] == y["acc"] for ra, rb in zip(a, b, strict=True)
                    for x, y in zip(ra, rb, strict=True))
    loss_diff = max(abs(x["loss"] - y["loss"]) / max(abs(x["loss"]), 1e-12)
                    for ra, rb in zip(a, b, strict=True) for x, y in zip(ra, rb, strict=True))
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    timing = alternate(one_at_a_time, together, args.pairs, sync)
    result = {"machine": machine(), "model": args.model, "states": len(states),
              "images_per_split": args.images, "batch": args.batch, "device": str(device),
              "speedup": timing["ratio"], "speedup_min": timing["ratio_min"],
              "speedup_max": timing["ratio_max"], "one_at_a_time_s": timing["baseline_s"],
              "together_s": timing["candidate_s"], "pairs": args.pairs,
              "accuracy_identical": acc_equal, "loss_max_rel_diff": loss_diff}
    print(f"{args.model}: {len(states)} states x 3 splits of {args.images} images, batch "
          f"{args.batch}: one at a time {timing['baseline_s']:.2f} s, together "
          f"{timing['candidate_s']:.2f} s, speed-up {timing['ratio']:.2f}x "
          f"[{timing['ratio_min']:.2f}, {timing['ratio_max']:.2f}]; accuracies identical: "
          f"{acc_equal}, largest relative loss difference {loss_diff:.1e}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
