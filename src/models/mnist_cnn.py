"""Small CNN used in the compressed-SGD study."""

from torch import nn


def mnist_cnn(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """Conv(32)-ReLU-MaxPool-Dropout-Linear(512)-ReLU-Linear: (N, C, H, W) -> (N, num_classes).

    For MNIST (1, 28, 28) the first Linear layer is 6272 -> 512.
    """
    channels, height, width = input_shape
    return nn.Sequential(
        nn.Conv2d(channels, 32, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Dropout(0.5),
        nn.Flatten(),
        nn.Linear(32 * (height // 2) * (width // 2), 512),
        nn.ReLU(),
        nn.Linear(512, num_classes),
    )
