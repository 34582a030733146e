"""Fully connected network on flattened inputs."""

from math import prod

from torch import nn


def mlp(
    input_shape: tuple[int, int, int],
    num_classes: int,
    width: int = 256,
    depth: int = 2,
    activation: str = "ReLU",
) -> nn.Module:
    """MLP: (N, C, H, W) -> flatten -> `depth` x [Linear(width), activation] -> (N, num_classes)."""
    act_cls = getattr(nn, activation, None)
    if not (isinstance(act_cls, type) and issubclass(act_cls, nn.Module)):
        raise ValueError(
            f"unknown activation {activation!r}: use a torch.nn activation name such as "
            "ReLU, GELU, Tanh"
        )
    layers: list[nn.Module] = [nn.Flatten()]
    in_features = prod(input_shape)
    for _ in range(depth):
        layers += [nn.Linear(in_features, width), act_cls()]
        in_features = width
    layers.append(nn.Linear(in_features, num_classes))
    return nn.Sequential(*layers)
