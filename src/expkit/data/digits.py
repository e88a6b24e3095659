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
        data = _digits_table()
        x = (data[:, :-1].reshape(-1, 8, 8) / 16.0).astype(np.float32)[:, None, :, :]
        return x, data[:, -1].astype(np.int64)


def _digits_table() -> np.ndarray:
    """scikit-learn's ``digits.csv.gz`` (64 pixels and the label per row), read the way
    ``sklearn.datasets.load_digits`` reads it but without importing scikit-learn (and SciPy),
    which would add about half a second to every run's start-up."""
    import gzip
    from importlib.util import find_spec
    from pathlib import Path

    spec = find_spec("sklearn")  # locates the package without importing it
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec and spec.origin else None
    if path is None or not path.is_file():  # a layout we do not know: let scikit-learn find it
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return np.column_stack([bunch.data, bunch.target])
    with gzip.open(path, "rt") as f:
        return np.loadtxt(f, delimiter=",")
