"""Test metrics of a pruned network: loss, top-1 and top-5 error."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from src.data.loader import DeviceData
from src.fast_path import FP32, FastPath


@torch.no_grad()
def topk_metrics(model: nn.Module, data: DeviceData, fast: FastPath = FP32) -> dict[str, float]:
    """Mean cross-entropy ('loss', nats) and top-1/top-5 error in [0, 1] ('top1_err',
    'top5_err') over every sample of `data`; top-5 counts all classes if there are fewer."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=data.x.device)
    correct = torch.zeros(2, dtype=torch.int64, device=data.x.device)
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
