"""Compressors, aggregation and bit-packing against direct per-element references written here.

The references are plain Python loops over small tensors; the MinMax `lin` reference rounds every
intermediate to float32 (as torch computes in fp32), so levels must agree exactly.
"""

from __future__ import annotations

import math
import struct
from fractions import Fraction

import pytest
import torch

from src.compression import aggregate, packing
from src.compression.compressors import QSGD, ErrorFeedback, MinMax, ScaledSign, Segments, Sign

CPU = torch.device("cpu")


def f32(x: float) -> float:
    """x rounded to the nearest float32 (round-to-double then to-float is exact for + - * /)."""
    return struct.unpack("f", struct.pack("f", x))[0]


def gradients(seed: int, steps: int = 6, workers: int = 2, n: int = 50) -> list[torch.Tensor]:
    """Steps of (W, n) gradients whose magnitude grows and shrinks, with exact zeros, so that the
    running extremes are both replaced by new values and decayed."""
    gen = torch.Generator().manual_seed(seed)
    sizes = [1.0, 0.3, 2.0, 0.5, 1.0, 0.1][:steps]
    out = [torch.randn(workers, n, generator=gen) * s for s in sizes]
    out[0][0, :3] = 0.0  # a zero at the first step sets M = m = 0
    out[2][1, 10:15] = 0.0
    return out


def reference_minmax(steps: list[torch.Tensor], bits: int, binning: str, decay: float):
    """The seed's quantiser element by element, rand_zero off: (levels per step, final M, m)."""
    k = 2 ** (bits - 1)
    d, eps = f32(decay), f32(1.0001)
    workers, n = steps[0].shape
    big = [[0.0] * n for _ in range(workers)]
    small = [[0.0] * n for _ in range(workers)]
    levels = []
    for t, g_t in enumerate(steps):
        rows = g_t.tolist()
        step = []
        for w in range(workers):
            row = []
            for i in range(n):
                g = rows[w][i]
                if t == 0:
                    big[w][i] = small[w][i] = g
                else:
                    big[w][i] = max(g, f32(d * big[w][i]))
                    small[w][i] = min(g, f32(d * small[w][i]))
                r = big[w][i] if g > 0 else small[w][i]
                if g == 0:
                    q = 0
                elif binning == "lin":
                    q = math.ceil(f32(k * g / r))
                else:
                    num = f32(math.log(f32(abs(g) + eps)))
                    q = math.ceil(f32(k * num / f32(math.log(f32(abs(r) + eps)))))
                row.append(q if g > 0 else -q)
            step.append(row)
        levels.append(step)
    return levels, big, small


@pytest.mark.parametrize("bits", [1, 2, 3])
@pytest.mark.parametrize("binning", ["lin", "exp"])
@pytest.mark.parametrize("decay", [1.0, 0.7])
def test_minmax_matches_the_per_element_reference(bits, binning, decay):
    steps = gradients(seed=10 * bits + int(10 * decay))
    comp = MinMax(bits, binning, decay, rand_zero=False)
    state = comp.init_state((2, 50), CPU)
    got = [comp.encode(g, state)[0] for g in steps]
    levels, big, small = reference_minmax(steps, bits, binning, decay)
    assert [q.tolist() for q in got] == levels
    if bits > 1:  # at 1 bit the level is sign(g) whatever the extremes, which are not tracked
        assert state["max"].tolist() == big and state["min"].tolist() == small
    k = 2 ** (bits - 1)
    assert all(q.dtype == torch.int32 and q.abs().max() <= k for q in got)
    # The element that sets a new extreme is quantised to the top level.
    assert got[0][0, 3:].abs().eq(k).all()
    assert comp.levels() == (-k, k) and comp.bits == bits + 1 and not comp.zero_free
    assert torch.equal(comp.decode(got[-1], torch.zeros(2, 0)), got[-1].float())


def test_minmax_decay_shrinks_the_extremes_so_small_gradients_use_more_levels():
    big, small = torch.full((1, 4), 1.0), torch.full((1, 4), 0.1)
    levels = {}
    for decay in (1.0, 0.3):
        comp = MinMax(3, decay=decay, rand_zero=False)
        state = comp.init_state((1, 4), CPU)
        comp.encode(big, state)
        for _ in range(3):
            q = comp.encode(small, state)[0]
        levels[decay] = q[0, 0].item()
    # beta = 1: M stays 1, ceil(4 * 0.1 / 1) = 1; beta = 0.3: M has shrunk to 0.1 itself, so 4.
    assert levels == {1.0: 1, 0.3: 4}


@pytest.mark.parametrize("bits", [1, 2, 3])
def test_rand_zero_only_replaces_zero_levels_with_random_signs(bits):
    steps = gradients(seed=bits)
    plain, rand = MinMax(bits, decay=0.7, rand_zero=False), MinMax(bits, decay=0.7)
    s_plain, s_rand = plain.init_state((2, 50), CPU), rand.init_state((2, 50), CPU)
    gen = torch.Generator().manual_seed(0)
    replaced = []
    for g in steps:
        g = g.clone()
        g[:, ::3] = 0.0  # plenty of zeros at every step
        q0, q1 = plain.encode(g, s_plain)[0], rand.encode(g, s_rand, gen)[0]
        assert torch.equal(torch.where(q0 == 0, q1, q0), q1)
        replaced.append(torch.where(q0 == 0, q1, 0).flatten())
        assert (q1 != 0).all() and q1.abs().max() <= 2 ** (bits - 1)
    signs = torch.cat(replaced)
    assert (signs == 1).any() and (signs == -1).any() and signs.abs().le(1).all()
    assert rand.bits == bits and rand.zero_free and rand.levels() == plain.levels()


def test_one_bit_minmax_is_sign_with_random_zeros():
    g = torch.randn(2, 300, generator=torch.Generator().manual_seed(3))
    g[:, :40] = 0.0
    comp = MinMax(1, decay=0.5)
    q = comp.encode(g, comp.init_state(g.shape, CPU), torch.Generator().manual_seed(7))[0]
    assert torch.equal(q[:, 40:], torch.sign(g[:, 40:]).int())
    # Same random stream: identical to Sign, random +-1s included.
    assert torch.equal(q, Sign().encode(g, {}, torch.Generator().manual_seed(7))[0])
    assert set(q[:, :40].unique().tolist()) == {-1, 1}


def test_sign_without_rand_zero_keeps_zeros():
    g = torch.tensor([[0.0, -2.0, 3.0]])
    comp = Sign(rand_zero=False)
    assert comp.encode(g, {})[0].tolist() == [[0, -1, 1]] and comp.bits == 2
    assert Sign().bits == 1 and Sign().levels() == (-1, 1)


def reference_vote(levels: list[list[int]]) -> list[int | None]:
    """The mean level rounded away from zero; None marks a tie (sum 0)."""
    w = len(levels)
    out: list[int | None] = []
    for column in zip(*levels, strict=True):
        mean = Fraction(sum(column), w)
        out.append(math.ceil(mean) if mean > 0 else math.floor(mean) if mean < 0 else None)
    return out


@pytest.mark.parametrize("workers", [1, 2, 3, 4, 5])
def test_vote_matches_the_per_element_reference(workers):
    gen = torch.Generator().manual_seed(workers)
    levels = torch.randint(-4, 5, (workers, 600), generator=gen, dtype=torch.int32)
    got = aggregate.vote(levels, tie="zero").tolist()
    assert got == [0 if r is None else r for r in reference_vote(levels.tolist())]


@pytest.mark.parametrize(("column", "expected"), [
    ([2, 2], 2), ([3, 1], 2), ([3, 2], 3), ([-3, -2], -3), ([-4, -2], -3), ([1, 0], 1),
    ([0, -1], -1), ([4, 4, -2], 2), ([-4, -4, 2], -2), ([1, 1, -1], 1), ([3, 3, 3], 3),
    ([1, 1, 1, -1], 1), ([4, 4, 4, 4], 4),
])
def test_vote_at_exact_multiples_and_fractions(column, expected):
    assert aggregate.vote(torch.tensor(column).unsqueeze(1)).tolist() == [expected]


def test_vote_with_one_worker_returns_its_levels():
    levels = torch.tensor([[3, -1, 2, -4, 1, -2]], dtype=torch.int32)
    assert torch.equal(aggregate.vote(levels), levels[0])


def test_vote_ties_follow_the_rule():
    tied = torch.tensor([[1, 2, -3] * 400, [-1, -2, 3] * 400])
    assert (aggregate.vote(tied, tie="zero") == 0).all()
    drawn = aggregate.vote(tied, tie="random", generator=torch.Generator().manual_seed(0))
    assert set(drawn.unique().tolist()) == {-1, 1}
    assert abs(drawn.float().mean().item()) < 0.1  # fair coin
    with pytest.raises(ValueError, match="tie=first"):
        aggregate.vote(tied, tie="first")


def test_vote_of_one_bit_levels_is_a_majority_vote():
    signs = torch.randint(0, 2, (5, 300), generator=torch.Generator().manual_seed(1)) * 2 - 1
    assert torch.equal(aggregate.vote(signs), torch.sign(signs.sum(dim=0)).int())


def test_mean_over_workers():
    values = torch.tensor([[1.0, -2.0], [3.0, 4.0], [2.0, 1.0]])
    assert aggregate.mean(values).tolist() == [2.0, 1.0]


@pytest.mark.parametrize("scale", ["norm", "max"])
@pytest.mark.parametrize("bits", [2, 3])
def test_qsgd_is_unbiased_and_rounds_to_a_neighbour_level(scale, bits):
    g = torch.randn(1, 64, generator=torch.Generator().manual_seed(0))
    comp = QSGD(bits, scale)
    big_l = 2 ** (bits - 1) - 1
    s = g.norm() if scale == "norm" else g.abs().max()
    gen = torch.Generator().manual_seed(1)
    draws, total = 20_000, torch.zeros(64)
    for _ in range(draws // 2_000):
        codes, scales = comp.encode(g.expand(2_000, 64), {}, gen)
        assert torch.allclose(scales, s.expand(2_000, 1))
        floor = torch.floor(big_l * (g.abs() / scales))  # as QSGD computes it, in fp32
        assert codes.abs().max() <= big_l
        assert ((codes.abs() - floor) * (codes.abs() - floor - 1) == 0).all()
        assert (codes * torch.sign(g) >= 0).all()
        total += comp.decode(codes, scales).sum(dim=0)
    # A draw is one of two levels s/L apart, so its standard deviation is at most s/(2L).
    tolerance = 5 * s / (2 * big_l) / math.sqrt(draws)
    assert ((total / draws - g[0]).abs() < tolerance).all()
    assert comp.levels() == (-big_l, big_l) and comp.bits == bits


def test_qsgd_zero_rows_decode_to_zero():
    g = torch.zeros(2, 10)
    g[1] = torch.linspace(-1, 1, 10)
    comp = QSGD(4, "max")
    codes, scales = comp.encode(g, {})
    out = comp.decode(codes, scales)
    assert (out[0] == 0).all() and torch.isfinite(out).all()
    assert out[1, 0] == -1.0 and out[1, -1] == 1.0  # |g| = s is exactly the top level


def test_scaled_sign_is_mean_magnitude_times_sign():
    g = torch.tensor([[0.5, -1.5, 0.0, 2.0], [-1.0, -1.0, 3.0, 0.0]])
    comp = ScaledSign()
    codes, scales = comp.encode(g, {})
    assert scales.shape == (2, 1) and torch.allclose(scales[:, 0], torch.tensor([1.0, 1.25]))
    # Zeros are sent as +1 (1 bit per element, no level for 0).
    expected = torch.tensor([[1.0, -1.0, 1.0, 1.0], [-1.25, -1.25, 1.25, 1.25]])
    assert torch.allclose(comp.decode(codes, scales), expected)
    assert comp.bits == 1 and comp.zero_free and comp.scaled


def test_scaled_compressors_keep_one_scale_per_segment():
    g = torch.tensor([[1.0, -3.0, 0.5, -0.5, 4.0]])
    segments = Segments(torch.tensor([0, 0, 1, 1, 2]), 3)
    codes, scales = ScaledSign().encode(g, {}, segments=segments)
    assert scales.tolist() == [[2.0, 0.5, 4.0]]
    assert ScaledSign().decode(codes, scales, segments).tolist() == [[2.0, -2.0, 0.5, -0.5, 4.0]]
    codes, scales = QSGD(2, "max").encode(g, {}, segments=segments)
    assert scales.tolist() == [[3.0, 0.5, 4.0]]


@pytest.mark.parametrize("make", [ScaledSign, lambda: QSGD(3), lambda: MinMax(2, decay=0.9)])
def test_error_feedback_memory_is_everything_not_yet_sent(make):
    ef = ErrorFeedback(make())
    inner = make()
    assert (ef.bits, ef.levels(), ef.zero_free, ef.scaled) == (
        inner.bits, inner.levels(), inner.zero_free, inner.scaled)
    segments = Segments(torch.tensor([0] * 10 + [1] * 20), 2)
    state = ef.init_state((2, 30), CPU)
    gen = torch.Generator().manual_seed(0)
    unsent = torch.zeros(2, 30, dtype=torch.float64)
    for g in gradients(seed=5, n=30):
        codes, scales = ef.encode(g, state, gen, segments)
        unsent += (g - ef.decode(codes, scales, segments)).double()
        # Telescoping: e_t = sum over steps of (g - decoded).
        assert torch.allclose(state["error"].double(), unsent, atol=1e-5)


def test_error_feedback_on_scaled_sign_transmits_the_whole_gradient():
    g = torch.tensor([[4.0, -0.2, 0.05, 1.0, -2.0, 0.0]])
    steps = 400
    for compressor, error_bound in ((ErrorFeedback(ScaledSign()), 0.05), (ScaledSign(), None)):
        state = compressor.init_state(g.shape, CPU)
        sent = torch.zeros_like(g)
        for _ in range(steps):
            sent += compressor.decode(*compressor.encode(g, state))
        gap = (sent / steps - g).abs().max().item()
        if error_bound is None:
            assert gap > 1.0  # plain scaled sign sends mean|g| * sign: biased
        else:
            assert gap < error_bound and state["error"].abs().max() < 10 * g.abs().max()


def reference_pack(codes: list[int], lowest: int, bits: int) -> list[int]:
    """The documented layout: element i at stream bits i*b.., LSB first; bit j in byte j // 8."""
    stream = [(c - lowest) >> k & 1 for c in codes for k in range(bits)]
    stream += [0] * (-len(stream) % 8)
    return [sum(bit << j for j, bit in enumerate(stream[i:i + 8]))
            for i in range(0, len(stream), 8)]


@pytest.mark.parametrize("bits", [*range(1, 9), 11, 16])
@pytest.mark.parametrize("shape", [(1,), (37,), (3, 41)])
def test_pack_follows_the_layout_and_round_trips(bits, shape):
    lowest = -(2 ** (bits - 1)) + 1  # an odd offset, like QSGD's -L
    gen = torch.Generator().manual_seed(bits)
    codes = torch.randint(lowest, lowest + 2**bits, shape, generator=gen, dtype=torch.int32)
    codes.view(-1)[0], codes.view(-1)[-1] = lowest, lowest + 2**bits - 1  # both ends of the range
    data = packing.pack(codes, lowest, bits)
    assert data.dtype == torch.uint8 and data.shape == (math.ceil(codes.numel() * bits / 8),)
    assert data.tolist() == reference_pack(codes.flatten().tolist(), lowest, bits)
    back = packing.unpack(data, lowest, bits, codes.numel())
    assert back.dtype == torch.int32 and torch.equal(back, codes.flatten())


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_zero_free_levels_pack_into_b_bits(bits):
    comp = MinMax(bits)  # rand_zero: the 2^b levels +-1..+-K
    g = torch.randn(2, 99, generator=torch.Generator().manual_seed(bits))
    g[:, ::5] = 0.0
    codes = comp.encode(g, comp.init_state(g.shape, CPU))[0]
    low = comp.levels()[0]
    data = packing.pack(codes, low, comp.bits, zero_free=True)
    assert data.numel() == math.ceil(codes.numel() * bits / 8)
    assert torch.equal(packing.unpack(data, low, comp.bits, codes.numel(), zero_free=True),
                       codes.flatten())


def test_one_bit_packing_and_payload_accounting():
    for n in (1, 8, 9, 1001):
        signs = torch.randint(0, 2, (n,)) * 2 - 1
        data = packing.pack(signs, -1, 1, zero_free=True)
        assert data.numel() == math.ceil(n / 8) == packing.payload_bytes(n, 1, 0)
    assert packing.pack(torch.tensor([1, 0, 1, 1, 0, 0, 0, 0, 1]), 0, 1).tolist() == [13, 1]
    assert packing.payload_bytes(1000, 3, 2) == 375 + 8
    assert packing.fp32_bytes(1000) == 4000
    assert packing.fp32_bytes(1 << 20) / packing.payload_bytes(1 << 20, 1, 0) == 32


@pytest.mark.parametrize(("make", "says"), [
    (lambda: MinMax(0), "num_bits=0"),
    (lambda: MinMax(17), "num_bits=17"),
    (lambda: MinMax(3, binning="log"), "binning=log"),
    (lambda: MinMax(3, decay=0.0), "decay=0.0"),
    (lambda: MinMax(3, decay=1.5), "decay=1.5"),
    (lambda: QSGD(1), "qsgd needs num_bits >= 2"),
    (lambda: QSGD(4, scale="l1"), "scale=l1"),
    (lambda: packing.pack(torch.zeros(4, dtype=torch.int32), 0, 0), "bits=0"),
    (lambda: packing.unpack(torch.zeros(4, dtype=torch.uint8), 0, 17, 2), "bits=17"),
])
def test_bad_arguments_are_one_line_value_errors(make, says):
    with pytest.raises(ValueError) as info:
        make()
    assert says in str(info.value) and "\n" not in str(info.value)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_encode_vote_and_pack_never_sync_with_the_host():
    dev = torch.device("cuda")
    gen = torch.Generator(device=dev).manual_seed(0)
    g = torch.randn(2, 1000, device=dev)
    segments = Segments(torch.arange(1000, device=dev) // 300, 4)
    compressors = [MinMax(3, "exp", 0.7), Sign(), ScaledSign(), QSGD(3, "max"),
                   ErrorFeedback(ScaledSign())]
    states = [c.init_state((2, 1000), dev) for c in compressors]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for comp, state in zip(compressors, states, strict=True):
            for _ in range(2):
                codes, scales = comp.encode(g, state, gen, segments)
                comp.decode(codes, scales, segments)
                low = comp.levels()[0]
                data = packing.pack(codes, low, comp.bits, comp.zero_free)
                packing.unpack(data, low, comp.bits, codes.numel(), comp.zero_free)
        aggregate.vote(codes, "random", gen)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
