"""The network of ``expkit.models.CharLanguageModel`` as a plain ``nn.Module`` (imports only torch).

The hand-written loop must not import Lightning, and ``expkit/models/language_model.py`` does (the
network is built inside the LightningModule). This copy builds the same layers, under the same
names, in the same order: with the same seed it holds the same weights and computes the same
logits (``tests/test_benchmarks.py`` holds the two equal), so every variant trains one network.
"""

from __future__ import annotations

import torch
from torch import nn


class CharTransformer(nn.Module):
    """Causal Transformer over characters: ``(batch, time)`` int64 -> logits ``(batch, time, vocab_size)``."""

    def __init__(self, vocab_size: int, seq_len: int, d_model: int = 128, num_layers: int = 2, num_heads: int = 4,
                 dim_feedforward: int | None = None, dropout: float = 0.1) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, d_model)
        self.position_embedding = nn.Embedding(seq_len, d_model)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(d_model, num_heads, dim_feedforward or 4 * d_model, dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)
        self.register_buffer("causal_mask", nn.Transformer.generate_square_subsequent_mask(seq_len), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time = x.shape[1]
        positions = torch.arange(time, device=x.device)
        h = self.dropout(self.token_embedding(x) + self.position_embedding(positions))
        h = self.layers(h, mask=self.causal_mask[:time, :time], is_causal=True)
        return self.head(self.norm(h))
