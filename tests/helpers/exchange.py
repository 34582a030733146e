"""A gradient exchange over two flat parameters, stepped on seeded gradients: what the fused and
eager paths (and the CUDA ones) must leave behind identically."""

from __future__ import annotations

import torch

from src.compression.exchange import GradientExchange

CPU = torch.device("cpu")


def exchange(compressor: object, setting: str, workers: int, n: int,
             device: torch.device = CPU,
             **kwargs: object) -> tuple[GradientExchange, list[torch.nn.Parameter]]:
    params = [torch.nn.Parameter(torch.zeros(n - 5, device=device)),
              torch.nn.Parameter(torch.zeros(5, device=device))]
    for p in params:
        p.grad = torch.zeros_like(p)
    ex = GradientExchange(compressor, fused=setting, **kwargs)
    ex.setup(params, workers, list(range(workers)))
    ex.start_epoch(lambda stream: 1000 + stream)
    return ex, params


def steps(ex: GradientExchange, params: list[torch.nn.Parameter], count: int) -> list[torch.Tensor]:
    """What `count` steps leave behind: each step's gradient, the level counts, the per-worker
    state and every generator's state (so both paths drew the same random numbers)."""
    data = torch.Generator().manual_seed(5)
    out = []
    for _ in range(count):
        g = torch.randn(ex.grads.shape, generator=data).to(ex.grads.device)
        g[:, ::7] = 0  # zeros: random signs, ties and the 0/0 of the min-max quantiser
        g[:, 1::11] *= 1e-3
        ex.grads.copy_(g)
        ex.reduce()
        out.append(torch.cat([p.grad.reshape(-1) for p in params]).clone())
    out.append(ex.level_counts.clone())
    out += [ex.state[k].clone() for k in sorted(ex.state)]
    out += [gen.get_state() for gen in [*ex.gens, ex.tie_gen]]
    return out
