"""Tabular classification sets bundled with scikit-learn (no download)."""

from __future__ import annotations

import numpy as np

from expkit.data.base import ArrayDataModule, DataSpec
from expkit.errors import ConfigError

# name -> (loader function in sklearn.datasets, number of features, number of classes)
TABLES = {
    "wine": ("load_wine", 13, 3),
    "iris": ("load_iris", 4, 3),
    "breast_cancer": ("load_breast_cancer", 30, 2),
}


class SklearnTableDataModule(ArrayDataModule):
    """One of scikit-learn's bundled tables, standardized with train-split statistics.

    Args:
        dataset: ``wine``, ``iris`` or ``breast_cancer``.
    """

    def __init__(self, dataset: str = "wine", standardize: bool = True, **kwargs) -> None:
        if dataset not in TABLES:
            raise ConfigError(f"data.dataset={dataset!r} is not bundled: use one of {sorted(TABLES)}.")
        super().__init__(standardize=standardize, **kwargs)
        self.dataset = dataset
        self.name = dataset

    def declare_spec(self) -> DataSpec:
        _, n_features, n_classes = TABLES[self.dataset]
        return DataSpec(self.name, (n_features,), n_classes)

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, TABLES[self.dataset][0])()
        return bunch.data.astype(np.float32), bunch.target.astype(np.int64)
