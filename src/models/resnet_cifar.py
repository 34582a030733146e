"""CIFAR ResNets (He et al. 2016, Sec. 4.2) with option-A shortcuts.

Follows akamaster/pytorch_resnet_cifar10, so resnet20/32/44/56/110 have 0.27M/0.46M/0.66M/
0.85M/1.7M parameters for 3-channel inputs and 10 classes.
"""

import torch
import torch.nn.functional as F
from torch import nn


class PadShortcut(nn.Module):
    """Option-A shortcut: subsample spatially by `stride` and zero-pad the new channels.

    (N, in_planes, H, W) -> (N, planes, H / stride, W / stride); parameter-free, which is what
    keeps the CIFAR ResNets at their published sizes.
    """

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        extra = planes - in_planes
        self.pad = (extra // 2, extra - extra // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, *self.pad))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus shortcut: (N, in_planes, H, W) -> (N, planes, H/s, W/s)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        needs_projection = stride != 1 or in_planes != planes
        self.shortcut = (
            PadShortcut(in_planes, planes, stride) if needs_projection else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetCifar(nn.Module):
    """3-stage ResNet (16/32/64 channels): (N, C, H, W) -> (N, num_classes), H, W >= 8."""

    def __init__(self, depth: int, in_channels: int, num_classes: int) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        blocks_per_stage = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        stages: list[nn.Module] = []
        in_planes = 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            strides = [stride] + [1] * (blocks_per_stage - 1)
            blocks = []
            for s in strides:
                blocks.append(BasicBlock(in_planes, planes, s))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        # Adaptive pooling (instead of a fixed 8x8 pool) lets any input size >= 8 work.
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.pool(self.stages(out))
        return self.linear(torch.flatten(out, 1))


def resnet20(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """ResNet-20 (0.27M parameters at 3x32x32, 10 classes)."""
    return ResNetCifar(20, input_shape[0], num_classes)


def resnet32(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """ResNet-32 (0.46M parameters at 3x32x32, 10 classes)."""
    return ResNetCifar(32, input_shape[0], num_classes)


def resnet44(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """ResNet-44 (0.66M parameters at 3x32x32, 10 classes)."""
    return ResNetCifar(44, input_shape[0], num_classes)


def resnet56(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """ResNet-56 (0.85M parameters at 3x32x32, 10 classes)."""
    return ResNetCifar(56, input_shape[0], num_classes)


def resnet110(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """ResNet-110 (1.7M parameters at 3x32x32, 10 classes)."""
    return ResNetCifar(110, input_shape[0], num_classes)
