"""Speed settings of the training loop: mixed precision, channels_last, cuDNN autotuning.

Defaults ('auto') pick speed on a GPU (bf16 autocast, channels_last for convolutional models,
cuDNN autotuning) and exact fp32 on a CPU.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from omegaconf import DictConfig
from torch import nn

from src.errors import ConfigError

AMP = {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}


class FastPath:
    """How the trainer runs forward passes: autocast dtype, memory format, loss scaling."""

    def __init__(self, amp: torch.dtype | None, channels_last: bool,
                 device: torch.device) -> None:
        self.amp, self.channels_last, self.device = amp, channels_last, device
        # fp16 needs loss scaling against underflow; bf16 has fp32's range and does not.
        self.scaler = torch.amp.GradScaler(device.type) if amp == torch.float16 else None

    @classmethod
    def from_config(cls, cfg: DictConfig, device: torch.device, model: nn.Module,
                    compressed: bool) -> FastPath:
        setting = str(cfg.amp)
        if setting == "auto":
            amp = torch.bfloat16 if device.type == "cuda" else None
        elif setting in AMP:
            amp = AMP[setting]
        else:
            raise ConfigError(f"trainer.amp={setting} is not a precision: use auto, bf16, fp16 "
                              f"or off")
        if amp == torch.float16 and (device.type != "cuda" or compressed):
            raise ConfigError("trainer.amp=fp16 needs a CUDA device and no gradient compression "
                              "(its loss scaling would reach the compressors): use bf16")
        has_conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
        setting = cfg.channels_last
        channels_last = (device.type == "cuda" and has_conv) if setting == "auto" else bool(setting)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = bool(cfg.cudnn_benchmark)
        return cls(amp, channels_last, device)

    def prepare(self, model: nn.Module) -> nn.Module:
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        if self.amp is None:
            yield
        else:
            with torch.autocast(self.device.type, dtype=self.amp):
                yield

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self, optimizer: torch.optim.Optimizer, params: list[torch.Tensor],
             grad_clip: float | None, loss: torch.Tensor | None = None) -> None:
        """Clip (on unscaled gradients) and step; with fp16, skip steps whose gradients overflow.

        `loss` (the mini-batch mean loss, unscaled) goes to optimizers that need it (Momo, ...).
        """
        kwargs = {} if loss is None else {"loss": loss}
        if self.scaler is not None:
            if grad_clip:
                self.scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(params, grad_clip)
            self.scaler.step(optimizer, **kwargs)
            self.scaler.update()
            return
        if grad_clip:
            nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step(**kwargs)


FP32 = FastPath(None, False, torch.device("cpu"))  # evaluation default: plain fp32
