"""The simulated workers' whole exchange step as one compiled function.

`GradientExchange.reduce` runs, for W simulated workers, per-worker momentum, encoding (min-max
update, quantisation, random zeros), level counting and aggregation (vote or mean) as about a
dozen separate passes over W x n elements, each with its own temporary. Here the same arithmetic
is written once as a function of flat (W, n) buffers and handed to torch.compile, which fuses it
into a few loops (C++ with OpenMP on a CPU, Triton kernels on a GPU).

Bit-identical to the eager path, random draws included: the random bytes are drawn outside the
compiled function, from the same generators and in the same amounts as the eager path draws them
(ceil(n / 8) bytes per worker for rand_zero, ceil(n / 8) from the tie generator for random ties),
and element i takes bit i % 8 of byte i // 8 in both. The eager path stays the reference
(tests/unit/compression/test_fused.py compares them). That holds where both use the same CPU
vector width: inductor compiles for the width that ATEN_CPU_CAPABILITY selects for ATen's own
kernels, and src/core/compile.py keeps its cache apart per width.

Fusable: MinMax and Sign, vote or mean, any tie rule, worker momentum (its update stays eager,
two passes: ATen's add with alpha is one fused multiply-add on CPUs with FMA, which inductor's
CPU code does not reproduce bit for bit), level counting over at most 16 levels. Not fusable
(the eager path runs): scaled compressors (ScaledSign, QSGD), error feedback, and counting more
than 16 levels (the eager path scatters those).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass

import torch
from torch import Tensor

from src.compression.compressors import ErrorFeedback, MinMax, Sign, signs_from_bytes
from src.core.compile import compile_fn

SETTINGS = ("auto", "true", "false")
# 'auto' fuses a run whose exchange work, elements per step (workers x parameters) times steps,
# reaches this: below it the compile's few seconds outweigh what the run saves (on two CPU cores
# the eager step costs ~10 ms per million elements, and more for small tensors, where each of its
# dozen ops has a fixed cost; the fused one about a tenth of that).
AUTO_MIN_WORK = 1 << 28
# Distinct compiled variants (settings x shapes) one process may hold, e.g. a joblib worker that
# runs many sweep jobs; torch.compile's default of 8 would silently fall back to eager.
RECOMPILE_LIMIT = 64


@dataclass(frozen=True)
class Spec:
    """The static settings the compiled step specialises on."""

    k: int  # MinMax's 2^(b-1); 1 for Sign (the level is sign(g))
    binning: str
    decay: float
    rand_zero: bool
    vote: bool
    random_tie: bool
    low: int
    high: int
    count: tuple[bool, ...]  # per level low..high: counted (level_counts); () counts nothing


def unfusable(exchange: object) -> str | None:
    """Why `exchange`'s step cannot be fused (one line), or None."""
    c = exchange.compressor
    if isinstance(c, ErrorFeedback):
        return "error feedback (compression.error_feedback=true) is not fused"
    if not isinstance(c, (MinMax, Sign)):
        return f"{type(c).__name__} is not fused (only minmax and sign are)"
    if exchange.count_levels and exchange.high - exchange.low + 1 > 16:
        return (f"counting {exchange.high - exchange.low + 1} levels is not fused (16 at most, "
                f"or compression.count_levels=false)")
    return None


def compiler_missing(device: torch.device) -> str | None:
    """Why torch.compile cannot build kernels for `device` here, or None."""
    if device.type == "cuda":
        from torch.utils._triton import has_triton
        return None if has_triton() else "Triton is not installed"
    if not any(shutil.which(cxx) for cxx in ("c++", "g++", "clang++")):
        return "no C++ compiler (c++, g++ or clang++) is on PATH"
    return None


def spec_of(exchange: object) -> Spec:
    c = exchange.compressor
    minmax = isinstance(c, MinMax)
    count = ()
    if exchange.count_levels:  # a zero-free compressor's level 0 is never counted
        count = tuple(bool(lv or not c.zero_free) for lv in range(exchange.low, exchange.high + 1))
    return Spec(k=c.k if minmax else 1, binning=c.binning if minmax else "lin",
                decay=c.decay if minmax else 1.0, rand_zero=c.rand_zero,
                vote=exchange.aggregate == "vote",
                random_tie=exchange.tie == "random",
                low=exchange.low, high=exchange.high, count=count)


def _step(g: Tensor, hi: Tensor | None, lo: Tensor | None, words: Tensor | None,
          tie_words: Tensor | None, counts: Tensor, out: Tensor, spec: Spec) -> None:
    """One exchange step on (W, n) gradients, writing the aggregate into `out` (n,) and updating
    hi, lo and counts in place; the eager path's arithmetic, op for op."""
    w, n = g.shape
    if spec.k == 1:
        q = torch.sign(g).to(torch.int32)
    else:
        new_hi = torch.maximum(g, hi * spec.decay)
        new_lo = torch.minimum(g, lo * spec.decay)
        hi.copy_(new_hi)
        lo.copy_(new_lo)
        scale = torch.where(g > 0, new_hi, new_lo)
        if spec.binning == "lin":
            ratio = g / scale
        else:
            ratio = torch.log(g.abs() + 1.0001) / torch.log(scale.abs() + 1.0001)
        q = (torch.ceil(ratio * spec.k).nan_to_num(0.0) * torch.sign(g)).to(torch.int32)
    if spec.rand_zero:
        q = torch.where(q == 0, signs_from_bytes(words, n), q)
    if spec.count:
        none = torch.zeros((), dtype=torch.int64, device=q.device)
        counts.add_(torch.stack([(q == level).sum() if counted else none for level, counted
                                 in zip(range(spec.low, spec.high + 1), spec.count,
                                        strict=True)]))
    if not spec.vote:
        out.copy_(q.float().mean(dim=0))
        return
    s = q.sum(dim=0, dtype=torch.int32)
    if w == 1:
        away = s
    elif max(-spec.low, spec.high) == 1:
        away = torch.sign(s)
    else:
        sf = s.float()
        away = (torch.ceil(sf.abs() / w) * torch.sign(sf)).to(torch.int32)
    fill = signs_from_bytes(tie_words, n) if spec.random_tie else torch.zeros_like(away)
    out.copy_(torch.where(s == 0, fill, away).float())


_compiled = None


def _compiled_step():
    global _compiled
    if _compiled is None:
        _compiled = compile_fn(_step, fullgraph=True, dynamic=False)
    return _compiled


class FusedReduce:
    """The compiled step of one GradientExchange, with its buffers for the random bytes."""

    def __init__(self, exchange: object) -> None:
        self.ex = exchange
        self.spec = spec_of(exchange)
        rows, device = len(exchange.local_workers), exchange.agg.device
        nbytes = (exchange.n + 7) // 8
        self.words = (torch.empty(rows, nbytes, dtype=torch.uint8, device=device)
                      if self.spec.rand_zero else None)
        self.tie_words = (torch.empty(nbytes, dtype=torch.uint8, device=device)
                          if self.spec.vote and self.spec.random_tie else None)

    def __call__(self) -> None:
        """The eager `reduce`'s encode-and-combine: the aggregate lands in exchange.agg."""
        ex, state = self.ex, self.ex.state
        g = ex.grads
        if ex.worker_momentum:  # eager, see the module's docstring
            g = state["momentum"].mul_(ex.worker_momentum).add_(g, alpha=1.0 - ex.worker_momentum)
        if self.words is not None:  # the draws random_signs makes, worker by worker
            for row, gen in enumerate(ex.gens):
                self.words[row].random_(0, 256, generator=gen)
        if self.tie_words is not None:
            self.tie_words.random_(0, 256, generator=ex.tie_gen)
        with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT,
                                        fail_on_recompile_limit_hit=True):
            _compiled_step()(g, state.get("max"), state.get("min"), self.words,
                             self.tie_words, ex.level_counts, ex.agg, self.spec)
