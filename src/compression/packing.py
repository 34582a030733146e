"""Bit-packing of integer codes: b bits per element on the wire.

Layout (little-endian bit order): codes are shifted to [0, 2^b) and written as one bit stream in
which element i occupies stream bits i*b .. i*b + b - 1, least significant bit first, and stream
bit j is bit j % 8 of byte j // 8; the last byte is padded with zero bits. 1 bit per element
packs n elements into ceil(n / 8) bytes. Level sets without 0 (zero_free, such as +-1..+-K after
rand_zero) have 2^b levels spread over 2^b + 1 integers: their positive levels first move down
by one, so +-1 fits in 1 bit and +-1..+-4 in 3.

Every b is handled by one vectorised path: each code is cut into fields of w bits (w = b when
b divides 8, so several codes share a byte; w = 8 when 8 divides b; otherwise w = 1) and the
field stream is joined 8 // w fields to a byte. No loop over elements, no host sync.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _check(bits: int) -> None:
    if not 1 <= bits <= 16:
        raise ValueError(f"bits={bits} cannot be packed: use 1..16")


def _field_width(bits: int) -> int:
    """Bits per field: the widest that both tiles a byte and tiles a code."""
    if 8 % bits == 0:
        return bits
    return 8 if bits % 8 == 0 else 1


def pack(codes: Tensor, lowest: int, bits: int, zero_free: bool = False) -> Tensor:
    """Integer codes (any shape, numel n) -> uint8 bytes (ceil(n * bits / 8),).

    Codes must lie in [lowest, lowest + 2^bits), or with zero_free (0 never occurs) in
    [lowest, lowest + 2^bits] without 0; bits outside that range are dropped, not checked
    (a check would need a host sync).
    """
    _check(bits)
    flat = codes.reshape(-1).to(torch.int32)
    shifted = flat - lowest - (flat > 0).to(torch.int32) if zero_free else flat - lowest
    width = _field_width(bits)
    per_code = bits // width
    cut = width * torch.arange(per_code, device=flat.device, dtype=torch.int32)
    # (n, per_code) fields of each code, least significant first, then one field stream.
    fields = ((shifted.unsqueeze(1) >> cut) & (2**width - 1)).to(torch.uint8).reshape(-1)
    per_byte = 8 // width
    pad = (-fields.numel()) % per_byte
    if pad:
        fields = torch.cat([fields, fields.new_zeros(pad)])
    place = width * torch.arange(per_byte, device=flat.device, dtype=torch.uint8)
    # The fields of a byte occupy disjoint bits, so their sum is their bitwise or (< 256).
    return (fields.view(-1, per_byte) << place).sum(dim=1, dtype=torch.uint8)


def unpack(data: Tensor, lowest: int, bits: int, numel: int, zero_free: bool = False) -> Tensor:
    """Inverse of `pack`: uint8 bytes (ceil(numel * bits / 8),) -> int32 codes (numel,)."""
    _check(bits)
    width = _field_width(bits)
    per_byte = 8 // width
    place = width * torch.arange(per_byte, device=data.device, dtype=torch.uint8)
    fields = ((data.unsqueeze(1) >> place) & (2**width - 1)).reshape(-1)
    per_code = bits // width
    fields = fields[: numel * per_code].to(torch.int32).view(numel, per_code)
    cut = width * torch.arange(per_code, device=data.device, dtype=torch.int32)
    values = (fields << cut).sum(dim=1, dtype=torch.int32) + lowest
    return values + (values >= 0).to(torch.int32) if zero_free else values


def payload_bytes(numel: int, bits: int, num_scales: int) -> int:
    """Bytes one worker sends per step: numel codes of `bits` bits packed, plus fp32 scales."""
    return math.ceil(numel * bits / 8) + 4 * num_scales


def fp32_bytes(numel: int) -> int:
    """Bytes of the same numel-element gradient as fp32 (what a plain all-reduce moves)."""
    return 4 * numel
