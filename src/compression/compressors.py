"""Gradient compressors. Each works on a (W, n) fp32 matrix whose row w is worker w's gradient.

Interface: `bits` (payload bits per element), `scaled` (whether fp32 scales are sent too),
`zero_free` (level 0 never occurs, so e.g. +-1 packs into 1 bit),
`levels()` (lowest, highest code), `init_state(shape, device)`,
`encode(g, state, generator, segments)` -> (codes int32 (W, n), scales fp32 (W, S)) updating
`state` in place, and `decode(codes, scales, segments)` -> fp32 (W, n), the value each worker
contributes. Scaled compressors keep one scale per segment: `segments` is a Segments of the n
elements (one per parameter tensor in training, so a DDP bucket, which holds whole tensors, gets
the same scales as the whole model); None means one segment per row.
Everything is vectorised and free of host syncs (no values read back to the host, no boolean-mask
indexing), so a GPU step never waits for the CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

BINNINGS = ("lin", "exp")


@dataclass(frozen=True)
class Segments:
    """ids: (n,) int64 segment of each element, in 0..count-1."""

    ids: Tensor
    count: int

    @staticmethod
    def of(g: Tensor, segments: Segments | None) -> Segments:
        if segments is not None:
            return segments
        return Segments(torch.zeros(g.shape[1], dtype=torch.int64, device=g.device), 1)

    def sum(self, values: Tensor) -> Tensor:
        """(W, n) -> (W, count) sums over each segment."""
        out = values.new_zeros(values.shape[0], self.count)
        return out.index_add_(1, self.ids, values)

    def amax(self, values: Tensor) -> Tensor:
        out = values.new_zeros(values.shape[0], self.count)
        return out.scatter_reduce_(1, self.ids.expand_as(values), values, "amax")

    def sizes(self, like: Tensor) -> Tensor:
        return self.sum(torch.ones(1, self.ids.numel(), dtype=like.dtype, device=like.device))

    def spread(self, per_segment: Tensor) -> Tensor:
        """(W, count) -> (W, n): each element's segment value."""
        return per_segment[:, self.ids]


def random_signs(like: Tensor, generator: torch.Generator | None) -> Tensor:
    """Independent random +-1 values (int32) shaped like `like`.

    One random byte gives eight signs: drawing n/8 bytes and splitting their bits is about four
    times cheaper than drawing n integers, and this runs on every step of 1-bit training.
    """
    n = like.numel()
    words = torch.empty((n + 7) // 8, dtype=torch.uint8, device=like.device)
    words.random_(0, 256, generator=generator)
    return signs_from_bytes(words, n).view(like.shape)


def signs_from_bytes(words: Tensor, n: int) -> Tensor:
    """(..., ceil(n / 8)) random bytes -> (..., n) int32 +-1: element i is bit i % 8 of byte
    i // 8 (random_signs' draws, and the fused exchange step's, src/compression/fused.py)."""
    shifts = torch.arange(8, dtype=torch.uint8, device=words.device)
    bits = ((words.unsqueeze(-1) >> shifts) & 1).flatten(-2)[..., :n]
    return bits.to(torch.int32).mul_(2).sub_(1)


class MinMax:
    """The compressed-SGD study's b-bit quantiser, exactly.

    State per element and worker: running max M and min m; first step M = m = g, then
    M <- max(g, decay * M), m <- min(g, decay * m) before quantising. With K = 2^(b-1):
    lin: q = ceil(K g / M) for g > 0, -ceil(K g / m) for g < 0, 0 for g = 0;
    exp: q = +-ceil(K ln(|g| + 1.0001) / ln(|R| + 1.0001)), R = M or m by sign.
    rand_zero turns every 0 into a random +-1: levels +-1..+-K, exactly b bits; otherwise the
    2K + 1 levels -K..K need b + 1 bits. The level itself is the step (no rescaling).
    """

    scaled = False

    def __init__(self, num_bits: int, binning: str = "lin", decay: float = 1.0,
                 rand_zero: bool = True) -> None:
        if not isinstance(num_bits, int) or not 1 <= num_bits <= 16:
            raise ValueError(f"num_bits={num_bits} is out of range for minmax: use 1..16")
        if binning not in BINNINGS:
            raise ValueError(f"compression.compressor.binning={binning} is not a binning: "
                             f"use lin or exp")
        if not 0.0 < decay <= 1.0:
            raise ValueError(f"compression.compressor.decay={decay} must lie in (0, 1]")
        self.k = 2 ** (num_bits - 1)
        self.binning, self.decay, self.rand_zero = binning, float(decay), rand_zero
        self.bits = num_bits if rand_zero else num_bits + 1
        self.zero_free = rand_zero

    def levels(self) -> tuple[int, int]:
        return -self.k, self.k

    def init_state(self, shape: tuple[int, int], device: torch.device) -> dict[str, Tensor]:
        # -inf / +inf make the first step's max(g, decay * M) and min(g, decay * m) equal g, the
        # seed's M = m = g, without a per-element "started" flag.
        return {"max": torch.full(shape, -math.inf, device=device),
                "min": torch.full(shape, math.inf, device=device)}

    def encode(self, g: Tensor, state: dict[str, Tensor], generator: torch.Generator | None = None,
               segments: Segments | None = None) -> tuple[Tensor, Tensor]:
        if self.k == 1:
            # One level per sign: every nonzero ratio lies in (0, 1] and rounds up to 1, so the
            # level is sign(g) whatever M and m are; they are not tracked (4 passes saved).
            q = torch.sign(g).to(torch.int32)
        else:
            hi, lo = state["max"], state["min"]
            torch.maximum(g, hi.mul_(self.decay), out=hi)
            torch.minimum(g, lo.mul_(self.decay), out=lo)
            scale = torch.where(g > 0, hi, lo)  # M for positive g, m for negative g
            if self.binning == "lin":
                ratio = g / scale  # in (0, 1] for g != 0; 2^(b-1) * g / M exactly
            else:
                ratio = torch.log(g.abs() + 1.0001) / torch.log(scale.abs() + 1.0001)
            # sign(g) * ceil(K * ratio); g = 0 (where 0/0 can occur) gives level 0.
            q = torch.ceil_(ratio.mul_(self.k)).nan_to_num_(0.0).mul_(torch.sign(g))
            q = q.to(torch.int32)
        if self.rand_zero:
            q = torch.where(q == 0, random_signs(q, generator), q)
        return q, g.new_zeros(g.shape[0], 0)

    def decode(self, codes: Tensor, scales: Tensor, segments: Segments | None = None) -> Tensor:
        return codes.float()


class Sign:
    """sign(g); with rand_zero zeros become a random +-1 (1 bit), else they stay 0 (2 bits)."""

    scaled = False

    def __init__(self, rand_zero: bool = True) -> None:
        self.rand_zero = rand_zero
        self.bits = 1 if rand_zero else 2
        self.zero_free = rand_zero

    def levels(self) -> tuple[int, int]:
        return -1, 1

    def init_state(self, shape: tuple[int, int], device: torch.device) -> dict[str, Tensor]:
        return {}

    def encode(self, g: Tensor, state: dict[str, Tensor], generator: torch.Generator | None = None,
               segments: Segments | None = None) -> tuple[Tensor, Tensor]:
        q = torch.sign(g).to(torch.int32)
        if self.rand_zero:
            q = torch.where(q == 0, random_signs(q, generator), q)
        return q, g.new_zeros(g.shape[0], 0)

    def decode(self, codes: Tensor, scales: Tensor, segments: Segments | None = None) -> Tensor:
        return codes.float()


class ScaledSign:
    """mean|g| * sign(g), the mean over each segment (parameter tensor) of each worker: 1 bit per
    element plus one fp32 scale per segment (zeros send +1)."""

    scaled = True
    zero_free = True
    bits = 1

    def levels(self) -> tuple[int, int]:
        return -1, 1

    def init_state(self, shape: tuple[int, int], device: torch.device) -> dict[str, Tensor]:
        return {}

    def encode(self, g: Tensor, state: dict[str, Tensor], generator: torch.Generator | None = None,
               segments: Segments | None = None) -> tuple[Tensor, Tensor]:
        q = torch.where(g < 0, -1, 1).to(torch.int32)
        seg = Segments.of(g, segments)
        return q, seg.sum(g.abs()) / seg.sizes(g)

    def decode(self, codes: Tensor, scales: Tensor, segments: Segments | None = None) -> Tensor:
        return codes.float() * Segments.of(codes, segments).spread(scales)


class QSGD:
    """QSGD: unbiased stochastic rounding of |g|/s to L = 2^(b-1) - 1 levels per sign.

    code = sign(g) * floor(L |g| / s + u), u ~ U[0, 1); decode = s * code / L, so E[decode] = g.
    s is the L2 norm ('norm') or max |g| ('max') of each segment (parameter tensor) of each
    worker; an all-zero segment decodes to 0.
    """

    scaled = True

    def __init__(self, num_bits: int, scale: str = "norm") -> None:
        if not isinstance(num_bits, int) or not 2 <= num_bits <= 16:
            raise ValueError(f"num_bits={num_bits}: qsgd needs num_bits >= 2 (and <= 16)")
        if scale not in ("norm", "max"):
            raise ValueError(f"compression.compressor.scale={scale} is not a scale: "
                             f"use norm or max")
        self.bits, self.scale = num_bits, scale
        self.L = 2 ** (num_bits - 1) - 1
        self.zero_free = False

    def levels(self) -> tuple[int, int]:
        return -self.L, self.L

    def init_state(self, shape: tuple[int, int], device: torch.device) -> dict[str, Tensor]:
        return {}

    def encode(self, g: Tensor, state: dict[str, Tensor], generator: torch.Generator | None = None,
               segments: Segments | None = None) -> tuple[Tensor, Tensor]:
        seg = Segments.of(g, segments)
        s = seg.sum(g * g).sqrt() if self.scale == "norm" else seg.amax(g.abs())
        ratio = g.abs() / seg.spread(torch.where(s > 0, s, torch.ones_like(s)))
        u = torch.rand(g.shape, generator=generator, device=g.device)
        level = torch.floor(self.L * ratio + u).clamp_(max=self.L)
        return (torch.sign(g) * level).to(torch.int32), s

    def decode(self, codes: Tensor, scales: Tensor, segments: Segments | None = None) -> Tensor:
        return codes.float() * Segments.of(codes, segments).spread(scales) / self.L


class ErrorFeedback:
    """EF-SGD around any compressor: send C(g + e), keep e <- (g + e) - decode(C(g + e))."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.bits, self.scaled, self.zero_free = inner.bits, inner.scaled, inner.zero_free

    def levels(self) -> tuple[int, int]:
        return self.inner.levels()

    def init_state(self, shape: tuple[int, int], device: torch.device) -> dict[str, Tensor]:
        return {**self.inner.init_state(shape, device),
                "error": torch.zeros(shape, device=device)}

    def encode(self, g: Tensor, state: dict[str, Tensor], generator: torch.Generator | None = None,
               segments: Segments | None = None) -> tuple[Tensor, Tensor]:
        v = g + state["error"]
        inner_state = {k: t for k, t in state.items() if k != "error"}
        codes, scales = self.inner.encode(v, inner_state, generator, segments)
        state["error"].copy_(v - self.inner.decode(codes, scales, segments))
        return codes, scales

    def decode(self, codes: Tensor, scales: Tensor, segments: Segments | None = None) -> Tensor:
        return self.inner.decode(codes, scales, segments)
