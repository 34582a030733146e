"""Loss and accuracy of one model, or of many states of one model, on a device-resident split;
one host sync per call."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap

from src.core.keys import metric_prefix
from src.data.bundle import DataBundle
from src.data.loader import DeviceData
from src.engine.fast_path import FP32, FastPath


@torch.no_grad()
def evaluate(model: nn.Module, data: DeviceData, fast: FastPath = FP32) -> dict[str, float]:
    """Mean cross-entropy ('loss') and top-1 accuracy in [0, 1] ('acc') over every sample of `data`.

    The model is put in eval mode for the call and restored afterwards.
    """
    return evaluate_samples(model, data, fast)[0]


@torch.no_grad()
def evaluate_samples(model: nn.Module, data: DeviceData,
                     fast: FastPath = FP32) -> tuple[dict[str, float], Tensor]:
    """evaluate()'s metrics and, per sample in order, whether the model classifies it correctly
    (a bool tensor left on the device: the caller decides when it crosses to the host)."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=data.device)
    hits = []
    for x, y in data.batches(None):
        with fast.autocast():
            logits = model(fast.inputs(x)).float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        hits.append(logits.argmax(dim=1) == y)
    model.train(was_training)
    n = data.num_samples
    correct = torch.cat(hits)
    loss, acc = torch.stack([loss_sum, correct.sum().double()]).tolist()
    return {"loss": loss / n, "acc": acc / n}, correct


@torch.no_grad()
def topk_metrics(model: nn.Module, data: DeviceData, fast: FastPath = FP32) -> dict[str, float]:
    """Mean cross-entropy ('loss', nats) and top-1/top-5 error in [0, 1] ('top1_err',
    'top5_err') over every sample of `data`; top-5 counts all classes if there are fewer."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=data.device)
    correct = torch.zeros(2, dtype=torch.int64, device=data.device)
    for x, y in data.batches(None):
        with fast.autocast():
            logits = model(fast.inputs(x)).float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hit = top == y[:, None]
        correct += torch.stack([hit[:, 0].sum(), hit.any(dim=1).sum()])
    model.train(was_training)
    n = data.num_samples
    loss, top1, top5 = torch.cat([loss_sum[None], correct.double()]).tolist()
    return {"loss": loss / n, "top1_err": 1.0 - top1 / n, "top5_err": 1.0 - top5 / n}


def distinct(states: list[dict[str, Tensor]]) -> tuple[list[dict[str, Tensor]], list[int]]:
    """The distinct states among `states` (equal tensors under every key) and, for each state,
    the index of its distinct one."""
    unique: list[dict[str, Tensor]] = []
    index = []
    for state in states:
        for i, u in enumerate(unique):
            if u.keys() == state.keys() and all(torch.equal(u[k], state[k]) for k in u):
                index.append(i)
                break
        else:
            index.append(len(unique))
            unique.append(state)
    return unique, index


@torch.no_grad()
def evaluate_states(model: nn.Module, states: list[dict[str, Tensor]], data: DeviceData,
                    fast: FastPath = FP32, group: int | None = None) -> list[dict[str, float]]:
    """evaluate() of `model` loaded with each of `states` (state dicts of `model`), every
    distinct state once. Up to `group` states are stacked and run together on each batch with
    torch.func's functional_call under vmap, so a batch is read once for all of them; `group`
    defaults to 8 on a GPU and to 1 on a CPU, where the stacked convolutions (grouped
    convolutions under vmap) run slower than one state at a time (benchmarks/evaluation.py) and
    each state runs through the model's own kernels, giving evaluate()'s numbers exactly.
    `model` itself is left as it is (its copy in eval mode is the template)."""
    if group is None:
        group = 8 if data.device.type == "cuda" else 1
    unique, index = distinct(states)
    template = copy.deepcopy(model).eval()
    names = [n for n, _ in template.named_parameters()] + [n for n, _ in template.named_buffers()]

    def forward(tensors: dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(template, tensors, (x,))

    batched = vmap(forward, in_dims=(0, None))  # ops without a batching rule loop
    results: list[dict[str, float]] = []
    for start in range(0, len(unique), group):
        chunk = unique[start:start + group]
        k = len(chunk)
        stacked = {n: torch.stack([s[n] for s in chunk]) for n in names} if k > 1 else None
        loss_sum = torch.zeros(k, dtype=torch.float64, device=data.device)
        correct = torch.zeros(k, dtype=torch.int64, device=data.device)
        for x, y in data.batches(None):
            with fast.autocast(), warnings.catch_warnings():
                warnings.filterwarnings("ignore", "There is a performance drop")  # such loops
                if k == 1:
                    logits = forward(chunk[0], fast.inputs(x)).float()[None]
                else:
                    logits = batched(stacked, fast.inputs(x)).float()  # (k, batch, classes)
            loss_sum += torch.stack([F.cross_entropy(lg, y, reduction="sum") for lg in logits])
            correct += (logits.argmax(dim=2) == y).sum(1)
        n = data.num_samples
        losses, hits = loss_sum.tolist(), correct.tolist()
        results += [{"loss": loss / n, "acc": hit / n} for loss, hit in zip(losses, hits,
                                                                            strict=True)]
    return [results[i] for i in index]



def final_and_best(model: nn.Module, states: dict[str, tuple[dict[str, Tensor], dict[str, Tensor]]],
                   data: DataBundle, splits: Sequence[str],
                   fast: FastPath = FP32) -> dict[str, float]:
    """Metrics `<model/>[best/]<split>_<loss|acc>` (summary.json's) of each named model's final
    and best state: `states[name] = (final, best)`. Every distinct state is evaluated once (a
    best state that equals the final one, as when the last epoch was the best, is not evaluated
    again), all of them together in one pass over each batch of a split (evaluate_states)."""
    keys, flat = [], []
    for name, (final, best) in states.items():
        for tag, weights in (("", final), ("best/", best)):
            keys.append(f"{metric_prefix(name)}{tag}")
            flat.append(weights)
    metrics: dict[str, float] = {}
    for split in splits:
        for key, m in zip(keys, evaluate_states(model, flat, data.split(split), fast),
                          strict=True):
            metrics[f"{key}{split}_loss"], metrics[f"{key}{split}_acc"] = m["loss"], m["acc"]
    return metrics
