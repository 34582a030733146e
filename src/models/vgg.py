"""VGG-16 with batch norm for CIFAR-sized inputs."""

from collections.abc import Sequence

from torch import nn

# torchvision's configuration "D", grouped into the five stages that each end in a 2x2 max-pool.
_VGG16_STAGES: tuple[tuple[int, ...], ...] = (
    (64, 64),
    (128, 128),
    (256, 256, 256),
    (512, 512, 512),
    (512, 512, 512),
)


def vgg16_bn(input_shape: tuple[int, int, int], num_classes: int,
             hidden: Sequence[int] = (), dropout: float = 0.0) -> nn.Module:
    """VGG-16-BN features + a classifier: (N, C, H, W) -> (N, num_classes), H, W >= 32.

    The classifier is [Dropout(dropout), Linear(h), ReLU] for each width h in `hidden`, then one
    Linear layer; hidden=[512, 512], dropout=0.5 is the optimizer records' 512-512-10 head.
    """
    channels, height, width = input_shape
    if height < 32 or width < 32:
        raise ValueError(
            "vgg16_bn needs inputs of at least 32x32; "
            f"the dataset gives {height}x{width}: pick another model"
        )
    layers: list[nn.Module] = []
    in_channels = channels
    for stage in _VGG16_STAGES:
        for out_channels in stage:
            layers += [
                nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True),
            ]
            in_channels = out_channels
        layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    # Five max-pools divide each spatial side by 32.
    layers.append(nn.Flatten())
    features = 512 * (height // 32) * (width // 32)
    for width_out in hidden:
        layers += [nn.Dropout(dropout), nn.Linear(features, width_out), nn.ReLU(inplace=True)]
        features = width_out
    return nn.Sequential(*layers, nn.Linear(features, num_classes))
