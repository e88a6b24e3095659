"""A character-level language model: a small causal Transformer predicting each next character.

    python train.py experiment=text_char_lm
    python eval.py ckpt_path=logs/train/runs/<run>/checkpoints/last.ckpt
    python predict.py ckpt_path=... '+data.prompt="The iris "'  # per-position next-character probabilities

It logs ``train/loss``, ``val/loss``, ``val/perplexity``, ``test/loss`` and ``test/perplexity``,
once per epoch. The loss is the mean cross-entropy per predicted character (nats); perplexity is
``exp`` of the mean cross-entropy over every character of the split (torchmetrics ``Perplexity``:
summed over batches and devices before the mean, not a mean of per-batch perplexities). A model
that has learnt nothing scores the vocabulary size (uniform guessing).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.text import Perplexity

from expkit.errors import ConfigError

EVAL_STAGES = ("val", "test")


class CharLanguageModel(pl.LightningModule):
    """Causal Transformer language model over a vocabulary of characters (GPT-style, pre-norm).

    Token and learned position embeddings, ``num_layers`` encoder layers under a causal mask (a
    position sees itself and the positions before it), a final layer norm and a linear head.

    Args:
        vocab_size: characters in the vocabulary (from the data's ``sizes``, see ``expkit.build``).
        seq_len: the longest context, in characters (from the data's ``sizes``).
        optimizer: partial optimizer; called with the parameters.
        scheduler: partial LR scheduler or ``None``; called with the optimizer.
        d_model: width of every position's state.
        num_layers: Transformer layers.
        num_heads: attention heads per layer (must divide ``d_model``).
        dim_feedforward: hidden width of each layer's feed-forward block (``None``: 4 x ``d_model``).
        dropout: dropout on embeddings and inside each layer.
        scheduler_monitor: metric a ``ReduceLROnPlateau`` scheduler watches.

    Raises:
        ConfigError: ``num_heads`` does not divide ``d_model``, or a size is not positive.
    """

    def __init__(
        self,
        vocab_size: int,
        seq_len: int,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        d_model: int = 128,
        num_layers: int = 2,
        num_heads: int = 4,
        dim_feedforward: int | None = None,
        dropout: float = 0.1,
        scheduler_monitor: str = "val/loss",
    ) -> None:
        super().__init__()
        for key, value in (("vocab_size", vocab_size), ("seq_len", seq_len), ("d_model", d_model),
                           ("num_layers", num_layers), ("num_heads", num_heads)):
            if value < 1:
                raise ConfigError(f"model.{key}={value} must be at least 1.")
        if d_model % num_heads:
            raise ConfigError(f"model.num_heads={num_heads} must divide model.d_model={d_model}: "
                              "pick e.g. num_heads=4 with d_model a multiple of 4.")
        # Sizes go into the checkpoint; the partials are rebuilt from the run's recorded config.
        self.save_hyperparameters(ignore=["optimizer", "scheduler"], logger=False)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler

        self.token_embedding = nn.Embedding(vocab_size, d_model)
        self.position_embedding = nn.Embedding(seq_len, d_model)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(d_model, num_heads, dim_feedforward or 4 * d_model, dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)
        # -inf above the diagonal: position t attends to 0..t. Not saved: derived from seq_len.
        self.register_buffer("causal_mask", nn.Transformer.generate_square_subsequent_mask(seq_len), persistent=False)
        # Keys "val"/"test" would clash with nn.Module methods, hence the suffix.
        self.perplexity = nn.ModuleDict({f"{stage}_perplexity": Perplexity() for stage in EVAL_STAGES})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Next-character logits ``(batch, time, vocab_size)`` of characters ``x`` ``(batch, time)``
        (int64 indices, ``time <= seq_len``); position ``t`` depends on ``x[:, :t+1]`` only.

        Raises ``ValueError`` when ``time`` exceeds ``seq_len``.
        """
        time = x.shape[1]
        if time > self.hparams.seq_len:
            raise ValueError(f"inputs of {time} characters exceed the model's seq_len={self.hparams.seq_len}")
        positions = torch.arange(time, device=x.device)
        h = self.dropout(self.token_embedding(x) + self.position_embedding(positions))
        h = self.layers(h, mask=self.causal_mask[:time, :time], is_causal=True)
        return self.head(self.norm(h))

    def _loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits, targets and the mean cross-entropy per character of a batch ``(x, y)``."""
        x, y = batch
        logits = self(x)
        return logits, y, F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        _, y, loss = self._loss(batch)
        # Epoch-level: weighted by characters, reduced over devices once, at the epoch's end.
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=y.numel(), sync_dist=True)
        return loss

    def _eval_step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> None:
        logits, y, loss = self._loss(batch)
        perplexity = self.perplexity[f"{stage}_perplexity"]
        perplexity.update(logits.float(), y)  # float: bf16 probabilities would lose the rare characters
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, batch_size=y.numel(), prog_bar=True, sync_dist=True)
        # Lightning computes the metric object at the epoch's end (synced over devices) and resets it.
        self.log(f"{stage}/perplexity", perplexity, on_step=False, on_epoch=True, prog_bar=stage == "val")

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, "test")

    def predict_step(self, batch, batch_idx):
        """Next-character probabilities ``(batch, time, vocab_size)`` at every position."""
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(x).softmax(dim=-1)

    @torch.no_grad()
    def generate(self, prompt: torch.Tensor, num_chars: int, temperature: float = 1.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Continue ``prompt`` (int64 indices, ``(time,)`` or ``(batch, time)``) by ``num_chars``
        characters, each sampled from the next-character distribution at ``temperature``
        (``0``: the most likely one); the model sees the last ``seq_len`` characters.

        Returns the prompt and its continuation, ``(batch, time + num_chars)`` (``(time + num_chars,)``
        for a 1-D prompt). Example, with the datamodule's ``encode`` and ``decode``::

            text = dm.decode(model.generate(dm.encode("The "), 200, temperature=0.8))
        """
        was_training = self.training
        self.eval()
        ids = prompt[None] if prompt.ndim == 1 else prompt
        ids = ids.to(self.device)
        for _ in range(num_chars):
            logits = self(ids[:, -self.hparams.seq_len:])[:, -1]
            if temperature == 0:
                nxt = logits.argmax(dim=-1, keepdim=True)
            else:
                probs = (logits / temperature).softmax(dim=-1)
                nxt = torch.multinomial(probs.cpu(), 1, generator=generator).to(ids.device)
            ids = torch.cat([ids, nxt], dim=1)
        self.train(was_training)
        return ids[0] if prompt.ndim == 1 else ids

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.parameters())
        if not self.scheduler_factory:  # null, or the empty model/scheduler=none
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": self.hparams.scheduler_monitor, "interval": "epoch"},
        }
