"""K copies of one network trained as one (stacked runs): the parameters of every copy (slot) in
one flat (K, N) tensor, the buffers stacked (K, ...), and the forward pass vmapped over the
slots with torch.func.functional_call, so the K networks run as batched kernels (batched matrix
products, grouped convolutions, BatchNorm over K x C channels with per-slot running statistics).

Each parameter is a leaf tensor (K, ...) that views the flat tensor, and its gradient views one
flat (K, N) gradient: backward accumulates into it in place, so a step allocates no (K, N)
tensor (on a CPU, the page faults of fresh allocations that size cost more than the arithmetic)
and the optimizer and the averages work on the two flat tensors.

A slot's network moves in (`load`) and out (`store`) of the stack as an ordinary nn.Module, which
is what evaluation, checkpoints and the observables read. Dropout draws per slot: each
nn.Dropout becomes SlotDropout, which multiplies by a mask that the caller draws for every slot
from that slot's own generator, exactly as F.dropout draws it on a CPU.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

# The parameters' gradients are views of the flat gradient (see above); autograd notes that such
# a layout is not the one it would pick, which is the point.
warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout")


class SlotDropout(nn.Module):
    """Dropout whose mask comes from outside (the `mask` buffer given to functional_call): the
    stack draws it per slot (Stack.masks)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        self.register_buffer("mask", torch.ones(0), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.mask if self.training else x


def dropout_sites(model: nn.Module, sample: Tensor) -> list[tuple[str, float, tuple[int, ...]]]:
    """(module name, p, input shape) of every active nn.Dropout in the order the forward pass
    calls them, found by one forward pass on `sample` (a batch)."""
    calls: list[tuple[str, float, tuple[int, ...]]] = []
    hooks = []
    model = copy.deepcopy(model).eval()  # the pass must not move BatchNorm's statistics
    for name, module in model.named_modules():
        if isinstance(module, nn.Dropout) and module.p > 0:
            def hook(m: nn.Module, args: tuple, name: str = name) -> None:
                calls.append((name, m.p, tuple(args[0].shape)))
            hooks.append(module.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            model(sample)
    finally:
        for h in hooks:
            h.remove()
    return calls


def unstackable(model: nn.Module, sample: Tensor) -> str | None:
    """Why `model` cannot train in a stack (an op that torch.func.vmap lacks, a random op
    outside nn.Dropout, a data-dependent branch), in one line; None if two slots of it run a
    forward and backward pass on `sample` (a batch)."""
    try:
        stack = Stack(model, 2, sample)
        out = stack.forward(sample.unsqueeze(0).expand(2, *sample.shape),
                            stack.masks(sample.shape[0], [None, None]))
        out.float().sum().backward()
    except Exception as e:  # any failure of the trial pass: the reason is what the user reads
        text = " ".join(str(e).split())
        return f"{type(e).__name__}: {text[:200]}"
    return None


class Stack:
    """`slots` copies of `template`'s architecture (see the module docstring).

    sample: one batch (B, ...) of the data the slots train on (finds the dropout sites).
    requires_grad: backward through `forward` collects the gradients in `grad` (K, N); False
    for callers that differentiate functionally (`params_of` a row under torch.func.grad).
    """

    def __init__(self, template: nn.Module, slots: int, sample: Tensor,
                 requires_grad: bool = True) -> None:
        self.slots = slots
        params = list(template.named_parameters())
        self.names = [n for n, _ in params]
        self.shapes = [p.shape for _, p in params]
        self.sizes = [p.numel() for _, p in params]
        device, dtype = params[0][1].device, params[0][1].dtype
        self.flat = torch.zeros(slots, sum(self.sizes), device=device, dtype=dtype)
        self.grad = torch.zeros_like(self.flat) if requires_grad else None
        self.leaves = self.shaped(self.flat)
        if self.grad is not None:
            for leaf, grad in zip(self.leaves.values(), self.shaped(self.grad).values(),
                                  strict=True):
                leaf.requires_grad_()
                leaf.grad = grad
        self.buffers = {n: torch.zeros(slots, *b.shape, dtype=b.dtype, device=device)
                        for n, b in template.named_buffers()}
        self.sites = dropout_sites(template, sample)
        # the functional copy: dropout replaced by SlotDropout; its own tensors are never read
        self.base = copy.deepcopy(template)
        for name, p, _ in self.sites:
            parent, _, leaf = name.rpartition(".")
            setattr(self.base.get_submodule(parent) if parent else self.base, leaf,
                    SlotDropout(p))
        self.base.train()

    # -- slots in and out -------------------------------------------------------------------

    @torch.no_grad()
    def load(self, slot: int, model: nn.Module) -> None:
        """Copy `model`'s parameters and buffers into slot `slot`."""
        self.load_params(slot, dict(model.named_parameters()))
        for name, b in model.named_buffers():
            self.buffers[name][slot] = b

    @torch.no_grad()
    def load_params(self, slot: int, params: dict[str, Tensor]) -> None:
        """Copy parameters given by name into slot `slot`."""
        self.flat[slot] = torch.cat([params[n].detach().reshape(-1) for n in self.names])

    @torch.no_grad()
    def store(self, slot: int, model: nn.Module) -> None:
        """Copy slot `slot` back into `model`'s own parameters and buffers."""
        torch._foreach_copy_(list(model.parameters()), self.rows(self.flat[slot]))
        for name, b in model.named_buffers():
            b.copy_(self.buffers[name][slot])

    def rows(self, row: Tensor) -> list[Tensor]:
        """One slot's flat row (N,) as views in the parameters' shapes."""
        return [piece.view(shape) for piece, shape in
                zip(row.split(self.sizes), self.shapes, strict=True)]

    def params_of(self, row: Tensor) -> dict[str, Tensor]:
        """One slot's flat row (N,) as the network's parameters, by name (for functional_call)."""
        return dict(zip(self.names, self.rows(row), strict=True))

    def shaped(self, flat: Tensor) -> dict[str, Tensor]:
        """A flat (K, N) tensor as (K, ...) views in the parameters' shapes, by name."""
        return {name: piece.view(self.slots, *shape) for name, piece, shape in
                zip(self.names, flat.split(self.sizes, dim=1), self.shapes, strict=True)}

    def zero_grad(self) -> None:
        assert self.grad is not None
        self.grad.zero_()

    # -- training ---------------------------------------------------------------------------

    def masks(self, batch: int, generators: Sequence[torch.Generator | None]) -> dict[str, Tensor]:
        """Every dropout site's mask (K, B, ...) for one step: slot k's drawn from generators[k]
        in the order the forward pass calls the sites, as F.dropout draws (bernoulli(1 - p),
        divided by 1 - p); a slot with no generator (empty) keeps ones."""
        out = {f"{name}.mask": torch.ones(self.slots, batch, *shape[1:], dtype=self.flat.dtype,
                                          device=self.flat.device)
               for name, _, shape in self.sites}
        for k, gen in enumerate(generators):
            if gen is None:
                continue
            for name, p, _ in self.sites:
                out[f"{name}.mask"][k].bernoulli_(1 - p, generator=gen).div_(1 - p)
        return out

    def forward(self, x: Tensor, masks: dict[str, Tensor] | None = None) -> Tensor:
        """Every slot's forward pass in training mode: x (K, B, ...) -> (K, B, ...)."""
        state = {**self.buffers, **(masks or {})}
        return vmap(self._call, in_dims=(0, 0, 0), randomness="error")(self.leaves, state, x)

    def forward_shared(self, x: Tensor) -> Tensor:
        """Every slot on the same inputs x (B, ...) -> (K, B, ...), with no gradient tape of its
        own (the caller decides)."""
        return vmap(self._call, in_dims=(0, 0, None), randomness="error")(
            self.leaves, self.buffers, x)

    def _call(self, params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(self.base, (params, buffers), (x,))
