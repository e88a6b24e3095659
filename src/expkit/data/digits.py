"""scikit-learn's bundled 8x8 handwritten digits: 1,797 grey images, 10 classes, no download."""

from __future__ import annotations

import numpy as np

from expkit.data.base import ArrayDataModule, DataSpec


class DigitsDataModule(ArrayDataModule):
    """Digits as ``(1, 8, 8)`` images scaled to [0, 1]."""

    name = "digits"

    def declare_spec(self) -> DataSpec:
        return DataSpec(self.name, (1, 8, 8), 10)

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        x = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]
        return x, bunch.target.astype(np.int64)
