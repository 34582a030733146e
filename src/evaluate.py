"""Loss and accuracy of a model on a device-resident split, one host sync per call."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from src.data.loader import DeviceData
from src.fast_path import FP32, FastPath


@torch.no_grad()
def evaluate(model: nn.Module, data: DeviceData, fast: FastPath = FP32) -> dict[str, float]:
    """Mean cross-entropy ('loss') and top-1 accuracy in [0, 1] ('acc') over every sample of `data`.

    The model is put in eval mode for the call and restored afterwards.
    """
    return evaluate_samples(model, data, fast)[0]


@torch.no_grad()
def evaluate_samples(model: nn.Module, data: DeviceData,
                     fast: FastPath = FP32) -> tuple[dict[str, float], torch.Tensor]:
    """evaluate()'s metrics and, per sample in order, whether the model classifies it correctly
    (a bool tensor left on the device: the caller decides when it crosses to the host)."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=data.x.device)
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
