"""Low-rank compression (ALDS: Liebenwein et al., "Compressing Neural Networks: Towards
Determining the Optimal Layer-wise Decomposition", NeurIPS 2021), written from the paper.

A Conv2d weight (out, in, k, k) is read as the matrix (out, in x k x k); with j subspaces its input
channels are split into j groups and each group's (out, in/j x k x k) block is factorised on its
own. Truncating every block's SVD at rank r gives two layers:

    Conv2d(in, j r, k, stride, padding, groups=j)  (the r right singular vectors of each block)
    Conv2d(j r, out, 1)                            (the blocks' U S, side by side; the bias)

whose composition is the truncated weight (a Linear layer likewise becomes two Linear layers,
with j = 1). A layer's relative error at rank r is ||W - W_r||_2 / ||W||_2: sigma_{r+1} /
sigma_1 for j = 1 (Eckart-Young), and the upper bound sqrt(sum_g sigma_{g,r+1}^2) / sigma_1 for
j > 1. Ranks are chosen to minimise the largest relative error over the layers subject to the
parameter budget (a bisection on that error, then single rank steps for the worst layer while
the budget allows); a layer whose factorisation would not be smaller stays dense.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from src.pruning.sensitivity import bisect_eps

Plan = dict[str, list[int]]  # layer name -> [rank, subspaces]


class Factorised(nn.Sequential):
    """The two layers of a truncated-SVD factorisation (first, second)."""


def _blocks(module: nn.Module, subspaces: int) -> list[Tensor]:
    w = module.weight.detach()
    if isinstance(module, nn.Linear):
        return [w]
    groups = w.shape[1] // subspaces
    return [w[:, g * groups:(g + 1) * groups].reshape(w.shape[0], -1) for g in range(subspaces)]


def max_rank(module: nn.Module, subspaces: int) -> int:
    block = _blocks(module, subspaces)[0]
    return min(block.shape)


def factorised_params(module: nn.Module, rank: int, subspaces: int) -> int:
    """Weights of the two factor layers at `rank` (per subspace)."""
    w = module.weight
    inputs = w[0].numel()  # in x k x k (or in_features)
    return rank * subspaces * (inputs // subspaces) + w.shape[0] * rank * subspaces


def relative_errors(module: nn.Module, subspaces: int) -> Tensor:
    """Relative operator-norm error of the factorisation at every rank 0..max_rank (float64)."""
    sigmas = [torch.linalg.svdvals(b.double()) for b in _blocks(module, subspaces)]
    top = torch.linalg.matrix_norm(module.weight.detach().double().reshape(
        module.weight.shape[0], -1), ord=2)
    stacked = torch.stack(sigmas)  # (j, R)
    tail = torch.cat([stacked, torch.zeros(len(sigmas), 1, dtype=stacked.dtype)], dim=1)
    per_rank = tail.pow(2).sum(0).sqrt() if len(sigmas) > 1 else tail[0]
    return (per_rank / top.clamp(min=1e-300)).float()


def check_subspaces(module: nn.Module, subspaces: int) -> int:
    """The subspaces `module` is split into: `subspaces` for a groups=1 Conv2d whose input
    channels it divides, 1 otherwise."""
    if not isinstance(module, nn.Conv2d) or module.groups != 1:
        return 1
    if module.in_channels % subspaces:
        return 1
    return subspaces


def factorise(module: nn.Module, rank: int, subspaces: int) -> Factorised:
    """The two-layer factorisation of `module` truncated at `rank` per subspace."""
    w = module.weight.detach()
    bias = module.bias is not None
    if isinstance(module, nn.Linear):
        first = nn.Linear(module.in_features, rank, bias=False)
        second = nn.Linear(rank, module.out_features, bias=bias)
    else:
        first = nn.Conv2d(module.in_channels, rank * subspaces, module.kernel_size,
                          stride=module.stride, padding=module.padding, dilation=module.dilation,
                          groups=subspaces, bias=False, padding_mode=module.padding_mode)
        second = nn.Conv2d(rank * subspaces, module.out_channels, 1, bias=bias)
    firsts, seconds = [], []
    for block in _blocks(module, subspaces):
        u, s, vh = torch.linalg.svd(block.double(), full_matrices=False)
        root = s[:rank].sqrt()  # split the singular values evenly between the two factors
        firsts.append(root[:, None] * vh[:rank])
        seconds.append(u[:, :rank] * root[None, :])
    with torch.no_grad():
        first.weight.copy_(torch.cat(firsts).reshape(first.weight.shape))
        second.weight.copy_(torch.cat(seconds, dim=1).reshape(second.weight.shape))
        if bias:
            second.bias.copy_(module.bias)
    return Factorised(first, second).to(device=w.device, dtype=w.dtype)


def allocate(modules: dict[str, nn.Module], budget: int, subspaces: int,
             dense_rest: int) -> tuple[Plan, dict[str, float]]:
    """Ranks minimising the largest relative error subject to (factorised weights + the
    `dense_rest` weights of layers left alone) <= budget; and each layer's error."""
    info = {}
    for name, m in modules.items():
        j = check_subspaces(m, subspaces)
        info[name] = (j, relative_errors(m, j), m.weight.numel())

    def rank_for(name: str, eps: float) -> int | None:
        j, err, dense = info[name]
        ok = torch.nonzero(err <= eps)
        rank = max(1, int(ok[0])) if len(ok) else len(err) - 1
        return rank if factorised_params(modules[name], rank, j) < dense else None

    def cost(ranks: dict[str, int | None]) -> int:
        return dense_rest + sum(info[n][2] if r is None else
                                factorised_params(modules[n], r, info[n][0])
                                for n, r in ranks.items())

    def at(eps: float) -> dict[str, int | None]:
        return {n: rank_for(n, eps) for n in modules}

    eps = bisect_eps(lambda e: cost(at(e)), budget)
    ranks = at(eps)
    if cost(ranks) > budget:
        raise ValueError(f"keep ratio too small for low-rank compression: rank 1 in every layer "
                         f"needs {cost(at(float('inf')))} weights, the budget is {budget}")

    def error(n: str) -> float:
        return 0.0 if ranks[n] is None else float(info[n][1][ranks[n]])

    while True:  # single rank steps for the worst layer while the budget allows
        worst = max(ranks, key=error)
        r = ranks[worst]
        if r is None or error(worst) == 0.0:
            break
        step = dict(ranks)
        bigger = r + 1
        j = info[worst][0]
        step[worst] = bigger if (bigger < len(info[worst][1]) and factorised_params(
            modules[worst], bigger, j) < info[worst][2]) else None
        if cost(step) > budget:
            break
        ranks = step
    plan = {n: [r, info[n][0]] for n, r in ranks.items() if r is not None}
    return plan, {n: error(n) for n in ranks}


def apply_plan(model: nn.Module, plan: Plan) -> None:
    """Replace every layer named in `plan` by its factorisation (in place)."""
    for name, (rank, subspaces) in plan.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, factorise(getattr(parent, child), rank, subspaces))
