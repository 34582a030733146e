"""How workers' gradients become one update: per-worker momentum, compression, aggregation.

One implementation serves both paths:
- simulated workers in one process (`reduce`): row w of a (W, n) matrix is worker w's gradient;
- real workers, one per process (`comm_hook`, a DDP communication hook): each rank encodes its own
  gradient, only the bit-packed codes (and any per-worker scales) cross the wire via all_gather,
  and every rank decodes and aggregates the same W rows.
Worker w draws its random bits (rand_zero, stochastic rounding) from its own generator, seeded
per epoch, in both paths; ties of the vote use a generator shared by all workers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from omegaconf import DictConfig
from torch import Tensor

from src.compression import aggregate, packing
from src.compression import fused as fused_step
from src.compression.compressors import ErrorFeedback, Segments
from src.core.build import build
from src.core.errors import ConfigError

TIE_STREAM, WORKER_STREAM = 99, 100


class GradientExchange:
    """Turns W workers' gradients into the one gradient the optimizer applies.

    compressor: a compressor of src.compression.compressors (its `bits` per element are sent).
    aggregate: 'vote' (the mean level rounded away from zero; for 1 bit a majority vote) or
        'mean' (the mean of the decoded values).
    tie: what a vote with level sum 0 gives: 'random' (+-1, the seed) or 'zero'.
    worker_momentum: beta > 0 makes each worker compress its own momentum
        m <- beta * m + (1 - beta) * g instead of g (Signum and its vote form).
    error_feedback: add each worker's compression error to its next gradient (EF-SGD).
    count_levels: count how often each level is sent (the seed's 'bin usage'), on the device.
    fused: run the simulated workers' step as one compiled function (src.compression.fused,
        bit-identical to the eager one): 'auto' (where it can, with a compiler at hand, for runs
        of at least fused.AUTO_MIN_WORK elements x steps), 'true' (refuse where it cannot) or
        'false'.
    """

    def __init__(self, compressor: object, aggregate: str = "vote", tie: str = "random",
                 worker_momentum: float = 0.0, error_feedback: bool = False,
                 count_levels: bool = True, fused: str = "auto") -> None:
        if aggregate not in ("vote", "mean"):
            raise ValueError(f"compression.aggregate={aggregate} is not an aggregation: "
                             f"use vote or mean")
        if tie not in ("random", "zero"):
            raise ValueError(f"compression.tie={tie} is not a tie rule: use random or zero")
        if not 0.0 <= worker_momentum < 1.0:
            raise ValueError(f"compression.worker_momentum={worker_momentum} must lie in [0, 1)")
        self.compressor = ErrorFeedback(compressor) if error_feedback else compressor
        self.aggregate, self.tie = aggregate, tie
        self.worker_momentum = worker_momentum
        self.count_levels = count_levels
        if str(fused).lower() not in fused_step.SETTINGS:
            raise ValueError(f"compression.fused={fused} is not a setting: use auto, true or "
                             f"false")
        self.fused_setting = str(fused).lower()
        if aggregate == "vote" and self.compressor.scaled:
            raise ValueError(f"compression.aggregate=vote needs integer levels, which "
                             f"{type(compressor).__name__} scales: use aggregate=mean")
        self.low, self.high = self.compressor.levels()
        self.bits = self.compressor.bits
        self.workers = 1
        self.local_workers: list[int] = [0]
        self.fused: fused_step.FusedReduce | None = None

    # ---- set-up ------------------------------------------------------------------------------
    def setup(self, params: Sequence[Tensor], workers: int, local_workers: Sequence[int],
              simulated: bool = True, steps: int = 1) -> None:
        """Allocate per-worker state for `params` (flattened in this order); `simulated`:
        all workers run in this process (reduce), not one per rank (comm_hook); `steps`: how
        many the run will take (what fused='auto' weighs against the compile)."""
        self.params = list(params)
        self.workers, self.local_workers = workers, list(local_workers)
        device = self.params[0].device
        sizes = [p.numel() for p in self.params]
        self.n = sum(sizes)
        self.offsets = [sum(sizes[:i]) for i in range(len(sizes))]
        rows = len(self.local_workers)
        self.state = self.compressor.init_state((rows, self.n), device)
        if self.worker_momentum:
            self.state["momentum"] = torch.zeros(rows, self.n, device=device)
        self.grads = torch.zeros(rows, self.n, device=device)  # simulated workers' gradients
        self.agg = torch.zeros(self.n, device=device)
        self.level_counts = torch.zeros(self.high - self.low + 1, dtype=torch.int64,
                                        device=device)
        self._ones = torch.ones(self.n if self.high - self.low >= 16 else 0, dtype=torch.int64,
                                device=device)
        self.gens = [torch.Generator(device=device) for _ in self.local_workers]
        self.tie_gen = torch.Generator(device=device)
        self._bucket_index: dict[tuple[int, ...], tuple[Tensor, Segments]] = {}
        self.bytes_sent = 0  # payload bytes this process sent so far (real workers)
        ids = torch.cat([torch.full((k,), i, dtype=torch.int64) for i, k in enumerate(sizes)])
        self.segments = Segments(ids.to(device), len(sizes))  # one scale per parameter tensor
        num_scales = len(sizes) if self.compressor.scaled else 0
        self.payload_bytes = packing.payload_bytes(self.n, self.bits, num_scales)
        self.fp32_bytes = packing.fp32_bytes(self.n)
        self.fused = (fused_step.FusedReduce(self) if self._fuse(simulated, device, steps)
                      else None)

    def _fuse(self, simulated: bool, device: torch.device, steps: int) -> bool:
        """Whether reduce runs the compiled step (see `fused`); True refuses what cannot be."""
        if self.fused_setting == "false":
            return False
        why = (None if simulated else "each rank encodes its own gradient in the DDP hook, "
               "eagerly") or fused_step.unfusable(self) or fused_step.compiler_missing(device)
        if self.fused_setting == "true":
            if why:
                raise ValueError(f"compression.fused=true, but {why}: use fused=auto or false")
            return True
        work = self.n * len(self.local_workers) * steps
        return why is None and work >= fused_step.AUTO_MIN_WORK

    def start_epoch(self, seed_of: callable) -> None:
        """Reseed the generators; seed_of(stream) gives this epoch's seed for a stream."""
        for gen, w in zip(self.gens, self.local_workers, strict=True):
            gen.manual_seed(seed_of(WORKER_STREAM + w))
        self.tie_gen.manual_seed(seed_of(TIE_STREAM))

    # ---- the math shared by both paths -------------------------------------------------------
    def encode(self, g: Tensor, row: int, index: Tensor | None = None,
               segments: Segments | None = None) -> tuple[Tensor, Tensor]:
        """Codes and scales of local worker `row` for gradient g (1, m); index: which of the n
        flattened elements g holds and segments their parameter tensors (None: all elements in
        order)."""
        segments = segments or self.segments
        state = {k: (v[row:row + 1] if index is None else v[row:row + 1, index])
                 for k, v in self.state.items()}
        if self.worker_momentum:  # compressors ignore state keys that are not theirs
            g = state["momentum"].mul_(self.worker_momentum).add_(
                g, alpha=1.0 - self.worker_momentum)
        # Every compressor updates its state in place, so rows (views) need no write-back.
        codes, scales = self.compressor.encode(g, state, self.gens[row], segments)
        if index is not None:  # a bucket's state was gathered (a copy): scatter it back
            for k, v in state.items():
                self.state[k][row:row + 1, index] = v
        if self.count_levels:
            self._count(codes)
        return codes, scales

    def _count(self, codes: Tensor) -> None:
        """Add the codes' level histogram to level_counts, on the device, without a sync."""
        if self.level_counts.numel() <= 16:  # a compare-and-sum per level beats a scatter
            for i, level in enumerate(range(self.low, self.high + 1)):
                if level or not self.compressor.zero_free:
                    self.level_counts[i] += (codes == level).sum()
        else:  # atomics; bincount would sync to size its output
            flat = (codes - self.low).flatten().long()
            self.level_counts.scatter_add_(0, flat, self._ones[: flat.numel()])

    def combine(self, codes: Tensor, scales: Tensor, segments: Segments | None = None) -> Tensor:
        """All W workers' codes (W, m) and scales (W, S) -> the aggregated gradient (m,)."""
        if self.aggregate == "vote":
            return aggregate.vote(codes, self.tie, self.tie_gen,
                                  max_level=max(-self.low, self.high)).float()
        return aggregate.mean(self.compressor.decode(codes, scales, segments or self.segments))

    # ---- simulated workers -------------------------------------------------------------------
    def capture(self, row: int) -> None:
        """Copy the parameters' current .grad into local worker `row`'s gradient row."""
        flat = self.grads[row]
        for p, o in zip(self.params, self.offsets, strict=True):
            flat[o:o + p.numel()].copy_(p.grad.reshape(-1))

    def reduce(self) -> None:
        """Encode every simulated worker's row, aggregate, and write the result into .grad."""
        if self.fused is not None:
            self.fused()
        else:
            coded = [self.encode(self.grads[r:r + 1], r) for r in range(len(self.local_workers))]
            codes = torch.cat([c for c, _ in coded])
            scales = torch.cat([s for _, s in coded])
            self.agg.copy_(self.combine(codes, scales))
        for p, o in zip(self.params, self.offsets, strict=True):
            p.grad.copy_(self.agg[o:o + p.numel()].view_as(p))

    # ---- real workers: DDP communication hook ------------------------------------------------
    def _index(self, bucket: dist.GradBucket) -> tuple[Tensor, Segments]:
        """For each element of the bucket's buffer: its position in our flattening, and its
        parameter tensor (cached per bucket layout). The layout is read off the gradient views'
        addresses inside the buffer, which need not follow bucket.parameters()' order."""
        buffer = bucket.buffer()
        key = (buffer.data_ptr(), *(id(p) for p in bucket.parameters()))
        if key not in self._bucket_index:
            where = {id(p): o for p, o in zip(self.params, self.offsets, strict=True)}
            spans = sorted(((grad.data_ptr() - buffer.data_ptr()) // buffer.element_size(),
                            where[id(p)], p.numel())
                           for p, grad in zip(bucket.parameters(), bucket.gradients(),
                                              strict=True))
            index = torch.cat([torch.arange(o, o + k) for _, o, k in spans])
            ids = torch.cat([torch.full((k,), j, dtype=torch.int64)
                             for j, (_, _, k) in enumerate(spans)])
            device = self.agg.device
            self._bucket_index[key] = (index.to(device), Segments(ids.to(device), len(spans)))
        return self._bucket_index[key]

    def comm_hook(self, bucket: dist.GradBucket) -> torch.futures.Future:
        """DDP hook: send this rank's packed codes, return the aggregate of all ranks'."""
        g = bucket.buffer()
        index, segments = self._index(bucket)
        codes, scales = self.encode(g.view(1, -1), 0, index, segments)
        zero_free = self.compressor.zero_free
        payload = packing.pack(codes, self.low, self.bits, zero_free)
        payloads = [torch.empty_like(payload) for _ in range(self.workers)]
        dist.all_gather(payloads, payload)
        self.bytes_sent += payload.numel()
        if scales.numel():
            scales = scales.contiguous()
            gathered = [torch.empty_like(scales) for _ in range(self.workers)]
            dist.all_gather(gathered, scales)
            self.bytes_sent += 4 * scales.numel()
            scales = torch.cat(gathered)
        else:
            scales = scales.new_zeros(self.workers, 0)
        all_codes = torch.stack([packing.unpack(p, self.low, self.bits, g.numel(), zero_free)
                                 for p in payloads])
        fut: torch.futures.Future = torch.futures.Future()
        fut.set_result(g.copy_(self.combine(all_codes, scales, segments).to(g.dtype)))
        return fut

    # ---- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Per-worker state of all W workers (gathered from every rank for real workers)."""
        state = {k: self._gather(v) for k, v in self.state.items()}
        return {"state": state, "level_counts": self.level_counts.clone()}

    def load_state_dict(self, saved: dict) -> None:
        rows = torch.tensor(self.local_workers)
        for k, v in self.state.items():
            v.copy_(saved["state"][k][rows].to(v.device))
        self.level_counts.copy_(saved["level_counts"])

    def _gather(self, v: Tensor) -> Tensor:
        if not dist.is_initialized() or self.workers == len(self.local_workers):
            return v.clone()
        parts = [torch.empty_like(v) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, v.contiguous())
        return torch.cat(parts)


def ddp_hook(state, bucket):
    """The DDP communication hook; `state` is the GradientExchange (register_comm_hook(ex, ...))."""
    return state.comm_hook(bucket)


def build_exchange(cfg: DictConfig) -> GradientExchange | None:
    """The compression group's pieces, or None for `compression=none`."""
    if cfg.get("compressor") is None:
        return None
    try:
        return GradientExchange(build(cfg.compressor), aggregate=cfg.aggregate, tie=cfg.tie,
                                worker_momentum=cfg.worker_momentum,
                                error_feedback=cfg.error_feedback,
                                count_levels=cfg.count_levels,
                                fused=cfg.get("fused", "auto"))
    except ValueError as e:
        raise ConfigError(str(e)) from None
