"""Networks for array data. Each takes ``input_shape`` (one sample's) and ``num_outputs`` (the
width of its output: classes for a classifier, targets for a regressor) from the model that wraps
it, and says with :meth:`accepts` which inputs it can consume (``expkit.build`` asks it)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


class MLP(nn.Module):
    """Fully connected network on flattened inputs (any shape).

    Args:
        hidden_dims: widths of the hidden layers.
        dropout: dropout after each hidden layer.
    """

    @staticmethod
    def accepts(input_shape: tuple[int, ...]) -> str | None:
        return None

    def __init__(
        self,
        input_shape: Sequence[int],
        num_outputs: int,
        hidden_dims: Sequence[int] = (256, 128),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for hidden in hidden_dims:
            layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden
        layers.append(nn.Linear(width, num_outputs))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class CNN(nn.Module):
    """Small convolutional net for images ``(channels, height, width)``.

    Each block is conv3x3 -> batch norm -> ReLU, then 2x2 max pooling while the image is at
    least 2 pixels wide; global average pooling and a small head follow.

    Args:
        channels: output channels of each conv block.
        hidden_dim: width of the fully connected layer before the output.
        dropout: dropout before the output layer.
    """

    @staticmethod
    def accepts(input_shape: tuple[int, ...]) -> str | None:
        if len(input_shape) != 3:
            return f"needs images shaped (channels, height, width), got input shape {tuple(input_shape)}"
        return None

    def __init__(
        self,
        input_shape: Sequence[int],
        num_outputs: int,
        channels: Sequence[int] = (32, 64),
        hidden_dim: int = 128,
        dropout: float = 0.25,
    ) -> None:
        super().__init__()
        in_channels, height, width = input_shape
        blocks: list[nn.Module] = []
        for out_channels in channels:
            blocks += [
                nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True),
            ]
            if min(height, width) >= 2:
                blocks.append(nn.MaxPool2d(2))
                height, width = height // 2, width // 2
            in_channels = out_channels
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_channels * height * width, hidden_dim),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, num_outputs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class FeatureTransformer(nn.Module):
    """Transformer encoder over features as tokens (FT-Transformer style) for tabular data.

    Every input feature becomes a token (its value times a learned embedding plus a learned
    bias); a class token is prepended and its final state gives the outputs. Images are flattened,
    one pixel a token, so keep them small.

    Args:
        d_model: token width.
        num_heads: attention heads (must divide ``d_model``).
        num_layers: encoder layers.
        dim_feedforward: hidden width of each layer's feed-forward block.
        dropout: dropout inside the encoder.
    """

    max_tokens = 4096

    @classmethod
    def accepts(cls, input_shape: tuple[int, ...]) -> str | None:
        tokens = math.prod(input_shape)
        if tokens > cls.max_tokens:
            return f"makes one token per feature and {tokens} features exceed {cls.max_tokens}"
        return None

    def __init__(
        self,
        input_shape: Sequence[int],
        num_outputs: int,
        d_model: int = 32,
        num_heads: int = 4,
        num_layers: int = 2,
        dim_feedforward: int = 64,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        num_features = math.prod(input_shape)
        self.weight = nn.Parameter(torch.randn(num_features, d_model) * d_model**-0.5)
        self.bias = nn.Parameter(torch.zeros(num_features, d_model))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d_model))
        layer = nn.TransformerEncoderLayer(
            d_model, num_heads, dim_feedforward, dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, num_outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.flatten(1).unsqueeze(-1) * self.weight + self.bias
        # x.shape[0], not len(x): a symbolic batch size keeps exported graphs (ONNX, TorchScript) batch-agnostic.
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1)
        return self.head(self.encoder(tokens)[:, 0])
