"""Data-informed sensitivities of weights and input channels (SiPP and PFP), and the sampling
they drive.

Written from the papers of seed 004's authors: Baykal, Liebenwein et al., "SiPPing Neural
Networks: Sensitivity-informed Provable Pruning of Neural Networks" (arXiv:1910.05422) and
Liebenwein et al., "Provable Filter Pruning for Efficient Neural Networks" (ICLR 2020).

For a prunable layer with weight W (rows: output neurons or filters; columns: the inputs one
output position reads, C/groups x k x k for a convolution) and a data point x, let a(x, p) >= 0
be the input patch at output position p. Activations may be negative (the first layer's
image, a layer after a residual sum): as in the papers, a point is split into its positive part
and its negated negative part, two non-negative points. With W+ and W- the positive and the
negated negative entries of W, z+(x, p) = W+ a(x, p) and z-(x, p) = W- a(x, p). The sensitivity
of weight w_ij is

    g_ij(x, p) = |w_ij| a_j(x, p) / z^{sign(w_ij)}_i(x, p)        (0 where the denominator is 0)

reduced over the output positions p (max, or mean for deterministic SiPP) and then over the
points x of a small data subset (max). g_ij is the share weight ij has in its neuron's
pre-activation of the same sign, so every weight's importance is relative to its own neuron.
PFP's sensitivity of input channel c is the largest sensitivity of any weight reading it (max over
output filters and kernel taps).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.data.bundle import DataBundle

CHUNK = 1 << 24  # elements of one temporary product tensor
REDUCTIONS = ("max", "mean")


def _explicit_padding(module: nn.Conv2d, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
    """x padded as the convolution pads it, and the padding left for F.unfold."""
    if isinstance(module.padding, str):
        if module.padding == "valid":
            return x, (0, 0)
        pads = []
        for k, d in zip(reversed(module.kernel_size), reversed(module.dilation), strict=True):
            total = d * (k - 1)
            pads += [total // 2, total - total // 2]
        return F.pad(x, pads), (0, 0)
    if module.padding_mode != "zeros":
        raise ValueError(f"padding_mode={module.padding_mode} convolutions are not supported by "
                         f"sensitivity pruning: use pruning=magnitude")
    return x, module.padding


def patches(module: nn.Module, x: Tensor) -> Tensor:
    """The inputs every output position reads: (G, D, Q) for G groups, D = inputs of one row,
    Q = points x output positions."""
    if isinstance(module, nn.Conv2d):
        x, padding = _explicit_padding(module, x)
        cols = F.unfold(x, module.kernel_size, dilation=module.dilation, padding=padding,
                        stride=module.stride)  # (N, C k k, P)
        g = module.groups
        n, d, p = cols.shape
        return cols.view(n, g, d // g, p).permute(1, 2, 0, 3).reshape(g, d // g, n * p)
    return x.reshape(-1, x.shape[-1]).T.unsqueeze(0)  # Linear: (1, in_features, points)


def weight_sensitivity(module: nn.Module, x: Tensor, reduction: str = "max") -> Tensor:
    """Sensitivity of every weight of `module` (shape of its weight) on the points of `x` (one
    batch of the layer's input): max over points of the max (or mean) over output positions."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction={reduction}: use one of {', '.join(REDUCTIONS)}")
    w = module.weight.detach()
    g = module.groups if isinstance(module, nn.Conv2d) else 1
    a = patches(module, x.detach().to(w.dtype))
    a = torch.cat([a.clamp(min=0), (-a).clamp(min=0)], dim=2)  # positive and negative parts
    w = w.reshape(g, w.shape[0] // g, -1)  # (G, O, D)
    w_pos, w_neg = w.clamp(min=0), (-w).clamp(min=0)
    points = x.shape[0] if isinstance(module, nn.Conv2d) else a.shape[2] // 2
    positions = a.shape[2] // (2 * points)
    if reduction == "max":  # columns without any activation add nothing to a maximum
        a = a[:, :, a.amax(dim=(0, 1)) > 0]
    out = []
    for w_side in (w_pos, w_neg):
        z = torch.bmm(w_side, a)  # (G, O, Q)
        r = torch.where(z > torch.finfo(z.dtype).eps, 1.0 / z.clamp(min=1e-38),
                        torch.zeros((), dtype=z.dtype, device=z.device))
        if reduction == "max":
            best = torch.zeros_like(w)
            step = max(1, CHUNK // max(1, w.numel()))
            for q in range(0, a.shape[2], step):
                prod = a[:, None, :, q:q + step] * r[:, :, None, q:q + step]
                best = torch.maximum(best, prod.amax(dim=-1))
        else:  # mean over the positions of each point, then max over points
            ap = a.view(g, a.shape[1], 2 * points, positions)
            rp = r.view(g, r.shape[1], 2 * points, positions)
            best = torch.einsum("gonp,gdnp->gnod", rp, ap).amax(dim=1) / positions
        out.append(best)
    sens = w.abs() * torch.where(w > 0, out[0], out[1])
    return sens.reshape(module.weight.shape)


def channel_sensitivity(module: nn.Module, weight_sens: Tensor) -> Tensor:
    """PFP: sensitivity of each input channel (feature) of a groups=1 layer, the largest
    sensitivity ('max' reduction) of a weight reading it."""
    return weight_sens.transpose(0, 1).reshape(weight_sens.shape[1], -1).amax(dim=1)


@torch.no_grad()
def layer_sensitivities(model: nn.Module, modules: dict[str, nn.Module], data: DataBundle,
                        samples: int, reduction: str = "max"
                        ) -> tuple[dict[str, Tensor], dict[str, int]]:
    """Weight sensitivities of every module in `modules` on the first `samples` points of the
    unaugmented training split (the model in eval mode: BatchNorm uses its running statistics),
    accumulated batch by batch with forward hooks; and each module's output positions per
    sample (1 for a Linear layer)."""
    if not isinstance(samples, int) or samples < 1:
        raise ValueError(f"pruning.method.samples={samples}: use an integer >= 1")
    sens = {name: torch.zeros_like(m.weight) for name, m in modules.items()}
    positions = dict.fromkeys(modules, 1)

    def hook(name: str) -> Callable:
        def record(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            sens[name] = torch.maximum(sens[name],
                                       weight_sensitivity(module, inputs[0], reduction))
            if isinstance(module, nn.Conv2d):
                positions[name] = output.shape[-2] * output.shape[-1]
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in modules.items()]
    was_training = model.training
    model.eval()
    try:
        seen = 0
        for x, _ in data.train_eval.batches(None):
            x = x[:samples - seen]
            model(x)
            seen += x.shape[0]
            if seen >= samples:
                break
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return sens, positions


def log_term(weight: Tensor, positions: int, delta: float, c: float) -> float:
    """alpha = 2 c log(8 (P + 1) k / delta) of the sample-complexity bound: P output positions
    per sample, k kernel taps."""
    taps = weight[0, 0].numel() if weight.dim() > 2 else 1
    return 2.0 * c * math.log(8.0 * (positions + 1) * taps / delta)


def sample_complexity(coeff: Tensor, eps: float) -> Tensor:
    """Samples that keep the relative error of a row with coefficient alpha x (sum of its
    sensitivities) within eps with probability 1 - delta: K (6 + 2 eps) coeff / eps^2, K = 3."""
    return 3.0 * (6.0 + 2.0 * eps) * coeff / (eps * eps)


def expected_unique(probs: Tensor, draws: Tensor) -> Tensor:
    """Expected number of distinct entries among `draws` draws with replacement from each row of
    `probs` (rows sum to 1 or are all zero): sum_j 1 - (1 - p_j)^m."""
    return (1.0 - (1.0 - probs).clamp(min=0.0).pow(draws[..., None])).sum(dim=-1)


def first_appearance(seq: Tensor, size: int) -> Tensor:
    """For each of `size` entries, the position of its first draw in `seq` (len(seq) if never
    drawn)."""
    first = torch.full((size,), len(seq), dtype=torch.long, device=seq.device)
    return first.scatter_reduce_(0, seq, torch.arange(len(seq), device=seq.device), "amin")


def draw_until_distinct(probs: Tensor, quota: int) -> tuple[Tensor, int]:
    """Draw with replacement from `probs` (1-D) until `quota` distinct entries have come up.

    Returns the number of times each entry was drawn and the number of draws m; an entry's
    importance-sampling weight is count / (m p). Uses torch's global generator.
    """
    count = torch.zeros_like(probs, dtype=torch.long)
    positive = int((probs > 0).sum())
    quota = min(quota, positive)
    if quota <= 0:
        return count, 0
    draws = 0
    while int((count > 0).sum()) < quota:
        seq = torch.multinomial(probs, max(64, 4 * quota), replacement=True)
        first = first_appearance(seq, probs.numel())
        new = first[(count == 0) & (first < seq.numel())].sort().values
        need = quota - int((count > 0).sum())
        cut = seq.numel() if len(new) < need else int(new[need - 1]) + 1
        count += torch.bincount(seq[:cut], minlength=probs.numel())
        draws += cut
    return count, draws


def appearance_order(probs: Tensor, cap: int = 1000) -> tuple[Tensor, Tensor, Tensor]:
    """Draw with replacement from `probs` until every entry with p > 0 has come up (at most
    cap x len(probs) draws): the entries by first appearance (those never drawn last, by p),
    the draws, and each entry's first_appearance in them. Uses torch's global generator."""
    positive = int((probs > 0).sum())
    seqs, seen, total = [], torch.zeros_like(probs, dtype=torch.bool), 0
    while int(seen.sum()) < positive and total < cap * len(probs):
        seq = torch.multinomial(probs, max(64, 4 * len(probs)), replacement=True)
        seqs.append(seq)
        seen[seq] = True
        total += len(seq)
    seq = torch.cat(seqs) if seqs else torch.zeros(0, dtype=torch.long)
    first = first_appearance(seq, len(probs))
    key = first.double() - probs / (1.0 + probs.max())  # unseen entries: by p, within one step
    order = key.argsort(stable=True)
    last = int(first[order[int(seen.sum()) - 1]]) + 1 if seen.any() else 0
    return order, seq[:last], first.clamp(max=last)


def largest_remainder(real: Tensor, caps: Tensor, total: int) -> Tensor:
    """Integers <= caps summing to `total` (or to sum(caps) if smaller), each the floor of
    `real` or one more, the extra ones going to the largest remainders."""
    base = real.floor().clamp(min=0).minimum(caps).long()
    left = int(min(total, int(caps.sum())) - int(base.sum()))
    if left > 0:
        room = base < caps
        remainder = torch.where(room, real - real.floor(), torch.full_like(real, -1.0))
        order = remainder.argsort(descending=True)[:left]
        base[order[room[order]]] += 1
    elif left < 0:
        order = (real - real.floor()).argsort()
        for i in order.tolist():
            if left == 0:
                break
            if base[i] > 0:
                base[i] -= 1
                left += 1
    return base


def bisect_eps(kept: Callable[[float], float], budget: float, iters: int = 80) -> float:
    """The smallest eps (bisection in log space over 1e-12..1e12) with kept(eps) <= budget;
    kept is non-increasing in eps."""
    lo, hi = math.log(1e-12), math.log(1e12)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if kept(math.exp(mid)) > budget:
            lo = mid
        else:
            hi = mid
    return math.exp(hi)
