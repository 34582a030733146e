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

from src.core.compile import compile_fn
from src.core.errors import ConfigError

AMP = {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}
# torch.compile's modes; reduce-overhead records CUDA graphs (on a GPU), which is what small
# networks need: their steps are a few hundred short kernel launches.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compile_mode(setting: object) -> str | None:
    """trainer.compile -> a torch.compile mode, or None (eager): false, true (default) or a mode."""
    if setting is False or setting is None:
        return None
    if setting is True:
        return "default"
    if setting in COMPILE_MODES:
        return str(setting)
    raise ConfigError(f"trainer.compile={setting} is not a setting: use false, true or a mode "
                      f"({', '.join(COMPILE_MODES)})")


class FastPath:
    """How the trainer runs forward passes: autocast dtype, memory format, loss scaling,
    torch.compile mode."""

    def __init__(self, amp: torch.dtype | None, channels_last: bool,
                 device: torch.device, compile: str | None = None) -> None:
        self.amp, self.channels_last, self.device = amp, channels_last, device
        self.compile_mode = compile
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
        return cls(amp, channels_last, device, compile_mode(cfg.get("compile", False)))

    def prepare(self, model: nn.Module) -> nn.Module:
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def compiled(self, model: nn.Module) -> nn.Module:
        """The module the training steps call: `model` itself, or compiled in its mode."""
        return model if self.compile_mode is None else compile_fn(model, mode=self.compile_mode)

    def forward_begins(self) -> None:
        """Before each training forward: with CUDA graphs, the outputs of the previous replay
        are consumed, so the next one may reuse their memory."""
        if self.compile_mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()

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
