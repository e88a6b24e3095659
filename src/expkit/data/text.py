"""Character-level text as next-character prediction windows; by default text that ships with
scikit-learn (its dataset descriptions), so nothing downloads.

    python train.py experiment=text_char_lm                       # the bundled text
    python train.py experiment=text_char_lm data.path=my_book.txt # any UTF-8 text file

The text is cut into windows of ``seq_len + 1`` characters, each starting ``seq_len`` after the
last (so no target character is predicted in two windows): the inputs ``x`` are a window's first
``seq_len`` characters, the targets ``y`` its last ``seq_len`` (each input character's successor).
Whole windows go to train/val/test by a permutation fixed by ``split_seed``.
"""

from __future__ import annotations

from functools import cached_property
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from expkit.data.base import BatchedTensorDataset, batch_as_fetched, split_indices
from expkit.errors import ConfigError, DataError
from expkit.reproducibility import EpochSeededSampler

BUNDLED_TEXT = "sklearn_descr"  # the name of the default text in messages and run records


def bundled_text_files() -> list[Path]:
    """scikit-learn's dataset descriptions (``sklearn/datasets/descr/*.rst``, ~43,000 characters
    of English with some reStructuredText), in sorted order; located without importing
    scikit-learn (half a second of start-up). Raises :class:`DataError` when they are not installed."""
    spec = find_spec("sklearn")
    folder = Path(spec.origin).parent / "datasets" / "descr" if spec and spec.origin else None
    files = sorted(folder.glob("*.rst")) if folder and folder.is_dir() else []
    if not files:
        raise DataError("data.path=null reads scikit-learn's dataset descriptions (sklearn/datasets/descr/*.rst), "
                        "which are not installed here: install scikit-learn or set data.path to a text file.")
    return files


class CharTextDataModule(pl.LightningDataModule):
    """Next-character prediction on a text: batches ``(x, y)`` of ``(batch, seq_len)`` int64
    character indices, ``y`` being ``x`` shifted one character ahead.

    The vocabulary is the text's distinct characters, sorted; it travels in checkpoints
    (:meth:`state_dict`), so a rebuilt model encodes and decodes as in training. ``sizes``
    (``vocab_size``, ``seq_len``) size the model (``expkit.build``); reading them reads the text
    (small), nothing else.

    Args:
        path: a UTF-8 text file; ``null``: scikit-learn's bundled dataset descriptions.
        seq_len: characters per window, the context the model sees.
        batch_size: windows per training step.
        val_fraction: share of the windows held out for validation (fixed by ``split_seed``).
        test_fraction: share held out for testing.
        split_seed: seed of the train/val/test split, independent of the training seed.
        shuffle_seed: seed of the training order; epoch ``e`` uses ``shuffle_seed + e`` so a resumed
            run sees the same order (``null``: 0).
        prompt: text to predict (``predict.py``): its next-character probabilities at every
            position; ``null``: the test windows' inputs.
        num_workers: DataLoader worker processes (0 loads in the training process).
        pin_memory: page-locked batches (``null``: when the trainer runs on a CUDA device).

    Raises:
        ConfigError: a bad ``seq_len``, ``batch_size`` or fractions (exit 2).
        DataError: a missing, unreadable or empty text, one too short for ``seq_len``, a prompt
            with characters outside the vocabulary (exit 3).
    """

    def __init__(
        self,
        path: str | None = None,
        seq_len: int = 64,
        batch_size: int = 32,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 0,
        shuffle_seed: int | None = 0,
        prompt: str | None = None,
        num_workers: int = 0,
        pin_memory: bool | None = None,
    ) -> None:
        super().__init__()
        for key, value in (("seq_len", seq_len), ("batch_size", batch_size)):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"data.{key}={value} must be a positive integer.")
        split_indices(0, val_fraction, test_fraction, split_seed)  # checks the fractions
        self.path = path
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.split_seed = split_seed
        self.shuffle_seed = 0 if shuffle_seed is None else shuffle_seed
        self.prompt = prompt
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.datasets: dict[str, BatchedTensorDataset] = {}
        self._vocabulary: str | None = None  # from the text, or from a checkpoint (load_state_dict)

    # -- what the text is ----------------------------------------------------------------------
    @property
    def name(self) -> str:
        return Path(self.path).name if self.path else BUNDLED_TEXT

    def data_files(self) -> list[Path]:
        """The user's text file (for DVC data versioning); none for the bundled text."""
        return [Path(self.path)] if self.path else []

    @cached_property
    def text(self) -> str:
        """The whole text. Raises :class:`DataError` for a missing, non-UTF-8 or empty file."""
        if self.path is None:
            return "".join(f.read_text(encoding="utf-8") for f in bundled_text_files())
        path = Path(self.path)
        if not path.is_file():
            raise DataError(f"data.path={self.path}: no such file; point data.path at a UTF-8 text file "
                            "(or null for the bundled text).")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"data.path={self.path} is not UTF-8 text ({exc.reason} at byte {exc.start}): "
                            "convert it to UTF-8.") from None
        if not text:
            raise DataError(f"data.path={self.path} is empty: give a text to learn from.")
        return text

    @property
    def vocabulary(self) -> str:
        """The characters a token index stands for, in index order (sorted)."""
        if self._vocabulary is None:
            self._vocabulary = "".join(sorted(set(self.text)))
        return self._vocabulary

    @property
    def sizes(self) -> dict[str, Any]:
        """``vocab_size`` (characters in the vocabulary) and ``seq_len`` (see ``expkit.build``)."""
        return {"vocab_size": len(self.vocabulary), "seq_len": self.seq_len}

    def encode(self, text: str, key: str = "data.path") -> torch.Tensor:
        """``text`` as a 1-D int64 tensor of vocabulary indices. Raises :class:`DataError` naming
        ``key`` for characters outside the vocabulary."""
        lookup = {c: i for i, c in enumerate(self.vocabulary)}
        unknown = sorted(set(text) - lookup.keys())
        if unknown:
            raise DataError(f"{key}: characters {''.join(unknown)[:20]!r} are not in the vocabulary the model was "
                            f"trained with ({len(self.vocabulary)} characters): remove them or retrain on a text "
                            "that has them.")
        return torch.tensor([lookup[c] for c in text], dtype=torch.long)

    def decode(self, indices: torch.Tensor | np.ndarray | list[int]) -> str:
        """Vocabulary indices (1-D) back to text."""
        return "".join(self.vocabulary[int(i)] for i in indices)

    def windows(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every window of the text: inputs and next-character targets, each ``(n, seq_len)``.
        Raises :class:`DataError` when the text is shorter than one window."""
        tokens = self.encode(self.text)
        count = (len(tokens) - 1) // self.seq_len
        if count < 1:
            raise DataError(f"data.seq_len={self.seq_len} needs at least {self.seq_len + 1} characters, "
                            f"{self.name} has {len(tokens)}: lower data.seq_len or use a longer text.")
        used = tokens[: count * self.seq_len + 1]
        return used[:-1].reshape(count, self.seq_len), used[1:].reshape(count, self.seq_len)

    # -- the LightningDataModule interface -------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if stage == "predict":
            self._setup_predict()
            return
        if set(self.datasets) >= {"train", "val", "test"}:
            return
        x, y = self.windows()
        splits = split_indices(len(x), self.val_fraction, self.test_fraction, self.split_seed)
        for split, fraction in (("train", 1.0), ("val", self.val_fraction), ("test", self.test_fraction)):
            if fraction > 0 and len(splits[split]) == 0:
                raise DataError(f"{self.name}: {len(x)} windows of data.seq_len={self.seq_len} characters leave the "
                                f"{split} split empty: lower data.seq_len, raise its fraction or use a longer text.")
        for split, index in splits.items():
            index = torch.as_tensor(np.sort(index))  # text order within a split: readable predictions
            self.datasets[split] = BatchedTensorDataset(x[index], y[index])

    def _setup_predict(self) -> None:
        if self.prompt is None:
            self.setup("fit")
            self.datasets["predict"] = BatchedTensorDataset(self.datasets["test"].tensors[0])
            return
        if not 1 <= len(self.prompt) <= self.seq_len:
            raise DataError(f"data.prompt has {len(self.prompt)} characters; the model sees 1 to data.seq_len="
                            f"{self.seq_len}: shorten it.")
        self.datasets["predict"] = BatchedTensorDataset(self.encode(self.prompt, key="data.prompt")[None])

    def _loader(self, split: str, shuffle: bool = False, collate_fn=batch_as_fetched) -> DataLoader:
        if split not in self.datasets:  # cleared by load_state_dict after setup
            self.setup("predict" if split == "predict" else "fit")
        dataset = self.datasets[split]
        pin = self.pin_memory if self.pin_memory is not None else (
            self.trainer is not None and self.trainer.strategy.root_device.type == "cuda")
        return DataLoader(dataset, batch_size=self.batch_size, collate_fn=collate_fn,
                          sampler=EpochSeededSampler(dataset, self.shuffle_seed) if shuffle else None,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0, pin_memory=pin)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        """Bare ``(batch, time)`` tensors: the test windows' inputs, or the prompt."""
        return self._loader("predict", collate_fn=_first_tensor)

    def state_dict(self) -> dict[str, Any]:
        """The vocabulary: a rebuilt model reads and writes characters as in training."""
        return {"vocabulary": self.vocabulary}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        vocabulary = state_dict.get("vocabulary")
        if vocabulary and vocabulary != self._vocabulary:
            self._vocabulary = str(vocabulary)
            self.datasets.clear()  # encoded with another vocabulary: encoded again when next loaded


def _first_tensor(batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    return batch[0]
