"""How much memory a device has free."""

from __future__ import annotations

import os

import torch


def free_memory(device: torch.device) -> int:
    """Free bytes on `device`: the CUDA allocator's view of the card, or the host's available
    pages (8 GiB where the host does not say)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 8 * 2**30
