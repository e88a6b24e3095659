"""Tabular data sets bundled with scikit-learn (no download): classification and regression."""

from __future__ import annotations

import numpy as np

from expkit.data.base import ArrayDataModule, DataSpec
from expkit.errors import ConfigError

# name -> (loader function in sklearn.datasets, number of features, number of classes; None: regression)
TABLES = {
    "wine": ("load_wine", 13, 3),
    "iris": ("load_iris", 4, 3),
    "breast_cancer": ("load_breast_cancer", 30, 2),
    "diabetes": ("load_diabetes", 10, None),  # disease progression after one year (25..346): 442 patients
}


class SklearnTableDataModule(ArrayDataModule):
    """One of scikit-learn's bundled tables, standardized with train-split statistics.

    Args:
        dataset: ``wine``, ``iris`` or ``breast_cancer`` (classification), or ``diabetes``
            (regression: one real-valued target per sample).
    """

    def __init__(self, dataset: str = "wine", standardize: bool = True, **kwargs) -> None:
        if dataset not in TABLES:
            raise ConfigError(f"data.dataset={dataset!r} is not bundled: use one of {sorted(TABLES)}.")
        super().__init__(standardize=standardize, **kwargs)
        self.dataset = dataset
        self.name = dataset

    def declare_spec(self) -> DataSpec:
        _, n_features, n_classes = TABLES[self.dataset]
        if n_classes is None:
            return DataSpec(self.name, (n_features,), target_shape=())
        return DataSpec(self.name, (n_features,), n_classes)

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        import sklearn.datasets

        loader, _, n_classes = TABLES[self.dataset]
        bunch = getattr(sklearn.datasets, loader)()
        return bunch.data.astype(np.float32), bunch.target.astype(np.int64 if n_classes is not None else np.float32)
