"""Optimizers of stacked runs: the parameters of K runs (slots) held as one flat (K, N) tensor,
each slot with hyperparameters of its own as device tensors, so one step updates every run with a
handful of kernels and no host sync.

Each class mirrors one torch.optim class: the same update, op for op where the per-slot tensors
allow it (torch's single-tensor step, which a CPU takes), so a slot follows its solo run to
float rounding. A slot's state moves to and from that class's own state (`load_slot`,
`store_slot`), so a stacked run's checkpoint is an ordinary run's and plain train.py resumes it.

Learning rates come per step (the slots' schedules, src/tasks/stacked/classify.py); the other
hyperparameters (momentum, dampening, weight decay, betas, eps) are read from each slot's own
optimizer when it enters.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor
from torch.optim import SGD, Adam, AdamW, Optimizer


class NotStackable(Exception):
    """A run whose optimizer (or another part) has no stacked counterpart; the message says why."""


def column(values: Tensor) -> Tensor:
    """A per-slot vector (K,) as a column (K, 1) that broadcasts over flat (K, N) tensors."""
    return values.view(-1, 1)


class StackedOptimizer:
    """The update of one torch.optim class over flat (K, N) parameters (see the module docstring).

    hyper: the per-slot hyperparameters, read from the slot optimizer's one parameter group.
    """

    kind: ClassVar[type[Optimizer]]
    hyper: ClassVar[tuple[str, ...]] = ()

    def __init__(self, flat: Tensor) -> None:
        self.flat = flat
        slots = flat.shape[0]
        self.h = {name: torch.zeros(slots, dtype=flat.dtype, device=flat.device)
                  for name in self.hyper}

    @staticmethod
    def signature(optimizer: Optimizer) -> tuple:
        """What slots sharing a stack must agree on (flags that change the code path)."""
        return ()

    def load_slot(self, slot: int, optimizer: Optimizer, params: list[Tensor]) -> None:
        """Take slot `slot`'s hyperparameters and state from `optimizer` (over `params`, the
        slot's own parameters, in the stack's order)."""
        group = optimizer.param_groups[0]
        for name in self.hyper:
            self.h[name][slot] = float(self.group_value(group, name))

    def group_value(self, group: dict, name: str) -> float:
        return group[name]

    def store_slot(self, slot: int, optimizer: Optimizer, params: list[Tensor]) -> None:
        """Write slot `slot`'s state into `optimizer`, so that its state_dict() is the run's."""

    def step(self, grad: Tensor, lr: Tensor) -> None:
        """One update of every slot: grad (K, N), lr (K,)."""
        raise NotImplementedError

    def pieces(self, flat: Tensor, params: list[Tensor]) -> list[Tensor]:
        """Views of one slot's row of a (K, N) state as `params`' shapes (slot chosen by the
        caller's indexing of `flat`)."""
        out, offset = [], 0
        for p in params:
            out.append(flat[offset:offset + p.numel()].view_as(p))
            offset += p.numel()
        return out


class StackedSGD(StackedOptimizer):
    """torch.optim.SGD: weight decay added to the gradient, momentum with dampening (the first
    step's buffer is the gradient itself, as torch's), optional Nesterov."""

    kind = SGD
    hyper = ("momentum", "dampening", "weight_decay")

    def __init__(self, flat: Tensor, nesterov: bool = False) -> None:
        super().__init__(flat)
        self.nesterov = nesterov
        self.buf = torch.zeros_like(flat)
        self.scratch = torch.zeros_like(flat)  # in-place work: (K, N) allocations are slow
        self.fresh: set[int] = set(range(flat.shape[0]))  # slots whose buffer starts now

    @staticmethod
    def signature(optimizer: Optimizer) -> tuple:
        group = optimizer.param_groups[0]
        if group.get("maximize"):
            raise NotStackable("optimizer.maximize=true has no stacked step")
        return (bool(group["nesterov"]),)

    def load_slot(self, slot: int, optimizer: Optimizer, params: list[Tensor]) -> None:
        super().load_slot(slot, optimizer, params)
        bufs = [optimizer.state.get(p, {}).get("momentum_buffer") for p in params]
        with torch.no_grad():
            if all(b is not None for b in bufs):
                self.buf[slot] = torch.cat([b.reshape(-1) for b in bufs])
                self.fresh.discard(slot)
            else:
                self.buf[slot] = 0
                self.fresh.add(slot)

    def store_slot(self, slot: int, optimizer: Optimizer, params: list[Tensor]) -> None:
        if optimizer.param_groups[0]["momentum"] == 0 or slot in self.fresh:
            return  # torch keeps no buffer without momentum, nor before the first step
        for p, b in zip(params, self.pieces(self.buf[slot], params), strict=True):
            optimizer.state[p]["momentum_buffer"] = b.clone()

    @torch.no_grad()
    def step(self, grad: Tensor, lr: Tensor) -> None:
        h = {k: column(v) for k, v in self.h.items()}
        d = self.scratch
        torch.mul(self.flat, h["weight_decay"], out=d).add_(grad)  # grad + wd * w
        self.buf.mul_(h["momentum"]).addcmul_(d, 1 - h["dampening"])
        for slot in self.fresh:  # torch's first buffer is the gradient itself
            self.buf[slot] = d[slot]
        self.fresh.clear()
        # momentum 0 (plain SGD): the buffer is the gradient itself, as torch's update is
        update = d.addcmul_(self.buf, h["momentum"]) if self.nesterov else self.buf
        self.flat.addcmul_(update, column(lr), value=-1)


class StackedAdam(StackedOptimizer):
    """torch.optim.Adam and AdamW (decoupled weight decay); the step count is per slot, so the
    bias corrections are too."""

    kind = Adam
    hyper = ("beta1", "beta2", "eps", "weight_decay")

    def __init__(self, flat: Tensor, decoupled: bool = False) -> None:
        super().__init__(flat)
        self.decoupled = decoupled
        self.exp_avg = torch.zeros_like(flat)
        self.exp_avg_sq = torch.zeros_like(flat)
        self.scratch = torch.zeros_like(flat)  # in-place work: (K, N) allocations are slow
        self.update = torch.zeros_like(flat)
        # float64: torch computes the bias corrections from the step count in Python floats
        self.steps = torch.zeros(flat.shape[0], dtype=torch.float64, device=flat.device)

    @staticmethod
    def signature(optimizer: Optimizer) -> tuple:
        group = optimizer.param_groups[0]
        for flag in ("amsgrad", "maximize"):
            if group.get(flag):
                raise NotStackable(f"optimizer.{flag}=true has no stacked step")
        return (decoupled(optimizer),)

    def group_value(self, group: dict, name: str) -> float:
        if name in ("beta1", "beta2"):
            return group["betas"][int(name[-1]) - 1]
        return group[name]

    def load_slot(self, slot: int, optimizer: Optimizer, params: list[Tensor]) -> None:
        super().load_slot(slot, optimizer, params)
        states = [optimizer.state.get(p, {}) for p in params]
        with torch.no_grad():
            if all("exp_avg" in s for s in states):
                self.exp_avg[slot] = torch.cat([s["exp_avg"].reshape(-1) for s in states])
                self.exp_avg_sq[slot] = torch.cat([s["exp_avg_sq"].reshape(-1) for s in states])
                self.steps[slot] = float(states[0]["step"])
            else:
                self.exp_avg[slot] = self.exp_avg_sq[slot] = 0
                self.steps[slot] = 0

    def store_slot(self, slot: int, optimizer: Optimizer, params: list[Tensor]) -> None:
        steps = float(self.steps[slot])
        if steps == 0:
            return
        avg, sq = self.pieces(self.exp_avg[slot], params), self.pieces(self.exp_avg_sq[slot],
                                                                        params)
        for p, a, s in zip(params, avg, sq, strict=True):
            state = optimizer.state[p]
            state["step"] = torch.tensor(steps, dtype=torch.float32)
            state["exp_avg"], state["exp_avg_sq"] = a.clone(), s.clone()

    @torch.no_grad()
    def step(self, grad: Tensor, lr: Tensor) -> None:
        h = {k: column(v) for k, v in self.h.items()}
        self.steps += 1
        g = self.scratch
        if self.decoupled:
            self.flat.mul_(1 - column(lr) * h["weight_decay"])
            g.copy_(grad)
        else:
            torch.mul(self.flat, h["weight_decay"], out=g).add_(grad)  # grad + wd * w
        self.exp_avg.lerp_(g, 1 - h["beta1"])
        self.exp_avg_sq.mul_(h["beta2"]).addcmul_(g, torch.mul(g, 1 - h["beta2"],
                                                               out=self.update))
        correction1 = 1 - self.h["beta1"].double() ** self.steps
        correction2 = 1 - self.h["beta2"].double() ** self.steps
        step_size = column((lr.double() / correction1).to(self.flat.dtype))
        root2 = column(correction2.sqrt().to(self.flat.dtype))
        denom = torch.sqrt(self.exp_avg_sq, out=g).div_(root2).add_(h["eps"])
        self.flat.sub_(torch.mul(self.exp_avg, step_size, out=self.update).div_(denom))


def decoupled(optimizer: Optimizer) -> bool:
    """AdamW's decoupled weight decay (torch >= 2.6 also offers it as Adam's flag)."""
    return bool(optimizer.param_groups[0].get("decoupled_weight_decay",
                                              isinstance(optimizer, AdamW)))


STACKED: dict[type[Optimizer], type[StackedOptimizer]] = {SGD: StackedSGD, Adam: StackedAdam,
                                                          AdamW: StackedAdam}


def stacked_kind(optimizer: Optimizer) -> tuple[type[StackedOptimizer], tuple]:
    """The stacked class for `optimizer` and the signature slots must share; NotStackable (with
    the reason) for an optimizer without one."""
    kind = STACKED.get(type(optimizer))
    if kind is None:
        name = f"{type(optimizer).__module__}.{type(optimizer).__name__}"
        raise NotStackable(f"{name} has no stacked step (stacked: torch.optim.SGD, Adam, AdamW)")
    if len(optimizer.param_groups) != 1:
        raise NotStackable("an optimizer with several parameter groups has no stacked step")
    return kind, (kind.__name__, *kind.signature(optimizer))


def build_stacked(optimizer: Optimizer, flat: Tensor) -> StackedOptimizer:
    """The stacked optimizer over `flat` for slots whose optimizers are like `optimizer`."""
    kind, _ = stacked_kind(optimizer)
    if kind is StackedSGD:
        return StackedSGD(flat, nesterov=bool(optimizer.param_groups[0]["nesterov"]))
    return StackedAdam(flat, decoupled=decoupled(optimizer))
