"""torchvision ImageNet ResNets adapted to small (32x32) inputs."""

from collections.abc import Callable

import torchvision
from torch import nn


def _small_input(
    builder: Callable[..., torchvision.models.ResNet],
    input_shape: tuple[int, int, int],
    num_classes: int,
) -> nn.Module:
    """Build a randomly initialised torchvision ResNet for small images.

    The 7x7/2 stem conv and the max-pool would shrink 32x32 inputs to 8x8 before the first
    stage, so the stem becomes a 3x3/1 conv and the max-pool is dropped.
    """
    model = builder(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(input_shape[0], 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def resnet18(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """ResNet-18 with a 3x3 stem: (N, C, H, W) -> (N, num_classes)."""
    return _small_input(torchvision.models.resnet18, input_shape, num_classes)


def resnet50(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """ResNet-50 with a 3x3 stem: (N, C, H, W) -> (N, num_classes)."""
    return _small_input(torchvision.models.resnet50, input_shape, num_classes)
