"""The augmentations of modern recipes, on device batches (`augment=`, conf/augment/):
label smoothing, Mixup and CutMix (timm's `Mixup` in its batch mode), and RandAugment or
TrivialAugment (torchvision.transforms.v2, per sample).

Every random choice comes from the run's generator, one draw per batch (`Recipe.draw`), so a run
resumes bit-identical and each slot of a stack draws its own. Mixing pairs each sample with the
batch read backwards (x.flip(0), as timm does) and mixes the targets with the same weight, so
the targets are class probabilities (B, K). Training accuracy then counts a prediction as
correct when it is the class of largest target probability: the label of the sample that
contributes more of the mixed input (ties: the lower class index).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from src.core.errors import ConfigError

POLICIES = ("randaugment", "trivialaugment")


@dataclass(frozen=True)
class Mix:
    """One batch's draw: the policy's seed (or None), and the mixing: mixup or cutmix with the
    weight `lam` of the batch's own samples, and cutmix's box (top, bottom, left, right)."""

    policy_seed: int | None
    kind: str | None = None
    lam: float = 1.0
    box: tuple[int, int, int, int] | None = None


@dataclass(frozen=True)
class Recipe:
    """conf/augment/*.yaml: label_smoothing in [0, 1); mixup_alpha, cutmix_alpha >= 0 (0: off);
    prob: a batch is mixed with this probability; switch_prob: with both on, the share of
    mixed batches that cut rather than blend; policy: randaugment, trivialaugment or None."""

    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    prob: float = 1.0
    switch_prob: float = 0.5
    policy: str | None = None
    num_ops: int = 2
    magnitude: int = 9

    @classmethod
    def from_config(cls, node: Any) -> Recipe | None:
        """The recipe of an `augment` node, or None when it changes nothing."""
        if node is None:
            return None
        recipe = cls(**{k: v for k, v in dict(node).items() if k in cls.__dataclass_fields__})
        recipe.check()
        return recipe if recipe.active else None

    def check(self) -> None:
        for key, value, ok, want in (
                ("label_smoothing", self.label_smoothing, 0 <= self.label_smoothing < 1,
                 "a number in [0, 1)"),
                ("mixup_alpha", self.mixup_alpha, self.mixup_alpha >= 0, "a number >= 0"),
                ("cutmix_alpha", self.cutmix_alpha, self.cutmix_alpha >= 0, "a number >= 0"),
                ("prob", self.prob, 0 <= self.prob <= 1, "a probability"),
                ("switch_prob", self.switch_prob, 0 <= self.switch_prob <= 1, "a probability"),
                ("policy", self.policy, self.policy in (None, *POLICIES),
                 f"one of {', '.join(POLICIES)} or null"),
                ("num_ops", self.num_ops, self.num_ops >= 1, "an integer >= 1"),
                ("magnitude", self.magnitude, 0 <= self.magnitude <= 30, "an integer 0..30")):
            if not ok:
                raise ConfigError(f"augment.{key}={value}: use {want}")

    @property
    def active(self) -> bool:
        return bool(self.label_smoothing or self.mixes or self.policy)

    @property
    def mixes(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    @property
    def soft(self) -> bool:
        """The targets are class probabilities (B, K) rather than indices."""
        return bool(self.label_smoothing or self.mixes)

    def draw(self, generator: torch.Generator | None, device: torch.device,
             shape: tuple[int, int]) -> Mix:
        """One batch's choices, from one integer of the run's generator (a host sync: cutmix's
        box is made on the host). shape: the images' (H, W)."""
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=device).item())
        rng = np.random.default_rng(seed)
        policy_seed = int(rng.integers(0, 2**62)) if self.policy else None
        if not self.mixes or rng.random() >= self.prob:
            return Mix(policy_seed)
        cut = self.cutmix_alpha > 0 and (self.mixup_alpha == 0 or rng.random() < self.switch_prob)
        alpha = self.cutmix_alpha if cut else self.mixup_alpha
        lam = float(rng.beta(alpha, alpha))
        if not cut:
            return Mix(policy_seed, "mixup", lam)
        h, w = shape  # a box of area (1 - lam) centred uniformly, clipped; lam follows the clip
        cut_h, cut_w = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
        cy, cx = int(rng.integers(0, h)), int(rng.integers(0, w))
        top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
        left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
        lam = 1 - (bottom - top) * (right - left) / (h * w)
        return Mix(policy_seed, "cutmix", lam, (top, bottom, left, right))

    def transform(self, raw: Tensor, mix: Mix) -> Tensor:
        """The policy on each raw uint8 image (B, C, H, W), seeded by the draw."""
        if self.policy is None:
            return raw
        from torchvision.transforms import v2
        op = (v2.RandAugment(num_ops=self.num_ops, magnitude=self.magnitude)
              if self.policy == "randaugment" else v2.TrivialAugmentWide())
        with torch.random.fork_rng(devices=[]):  # v2 draws from the host's global generator
            torch.random.default_generator.manual_seed(mix.policy_seed)
            return torch.stack([op(image) for image in raw])

    def mixed(self, x: Tensor, y: Tensor, mix: Mix, num_classes: int) -> tuple[Tensor, Tensor]:
        """The batch and its targets after mixing, targets as probabilities when soft."""
        if not self.soft:
            return x, y
        smooth = self.label_smoothing
        target = torch.full((len(y), num_classes), smooth / num_classes, device=y.device)
        target.scatter_(1, y.view(-1, 1), 1 - smooth + smooth / num_classes)
        if mix.kind is None:
            return x, target
        if mix.kind == "mixup":
            x = x * mix.lam + x.flip(0) * (1 - mix.lam)
        else:
            assert mix.box is not None
            top, bottom, left, right = mix.box
            x = x.clone()
            x[:, :, top:bottom, left:right] = x.flip(0)[:, :, top:bottom, left:right]
        return x, target * mix.lam + target.flip(0) * (1 - mix.lam)


def correct(logits: Tensor, y: Tensor) -> Tensor:
    """How many predictions are right: against the labels, or against the class of largest
    probability when the targets are probabilities (Mixup, CutMix, label smoothing)."""
    labels = y.argmax(dim=-1) if y.is_floating_point() else y
    return (logits.argmax(dim=-1) == labels).sum(dim=-1)
