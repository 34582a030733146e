"""Small Vision Transformer (Dosovitskiy et al. 2021) for low-resolution images."""

import torch
from torch import nn


class ViT(nn.Module):
    """Pre-norm ViT with a class token: (N, C, H, W) -> (N, num_classes)."""

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_classes: int,
        patch_size: int,
        dim: int,
        depth: int,
        heads: int,
        mlp_ratio: float,
        dropout: float,
    ) -> None:
        super().__init__()
        channels, height, width = input_shape
        if height % patch_size or width % patch_size:
            raise ValueError(
                f"vit: input {height}x{width} is not divisible by patch_size={patch_size}"
            )
        num_patches = (height // patch_size) * (width // patch_size)
        self.patch_embed = nn.Conv2d(channels, dim, kernel_size=patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, dim))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(
            dim,
            heads,
            int(dim * mlp_ratio),
            dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        # Nested tensors only help with padding masks, which ViT never uses.
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)  # (N, num_patches, dim)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        tokens = self.dropout(torch.cat([cls, tokens], dim=1) + self.pos_embed)
        tokens = self.norm(self.encoder(tokens))
        return self.head(tokens[:, 0])


def vit(
    input_shape: tuple[int, int, int],
    num_classes: int,
    patch_size: int = 4,
    dim: int = 192,
    depth: int = 6,
    heads: int = 3,
    mlp_ratio: float = 4.0,
    dropout: float = 0.0,
) -> nn.Module:
    """ViT on (N, C, H, W) with H, W divisible by `patch_size`; returns (N, num_classes)."""
    return ViT(input_shape, num_classes, patch_size, dim, depth, heads, mlp_ratio, dropout)
