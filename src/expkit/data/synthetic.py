"""Synthetic classification data of any shape: learnable, seeded, made in memory."""

from __future__ import annotations

import numpy as np

from expkit.data.base import ArrayDataModule, DataSpec
from expkit.errors import ConfigError


class SyntheticDataModule(ArrayDataModule):
    """Gaussian clusters around one random prototype per class.

    Args:
        num_samples: total samples before the split.
        input_shape: shape of one sample, e.g. ``[32]`` (a vector) or ``[3, 32, 32]`` (an image).
        num_classes: number of clusters.
        noise: standard deviation around each prototype (larger is harder).
        data_seed: seed of the generated data.
    """

    name = "synthetic"

    def __init__(
        self,
        num_samples: int = 2048,
        input_shape: tuple[int, ...] = (32,),
        num_classes: int = 4,
        noise: float = 1.0,
        data_seed: int = 0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if num_samples < 3 or num_classes < 2 or not input_shape or min(input_shape) < 1:
            raise ConfigError(
                f"data: num_samples={num_samples}, input_shape={list(input_shape)}, "
                f"num_classes={num_classes} cannot make a dataset: need num_samples >= 3, "
                "num_classes >= 2 and positive input dimensions."
            )
        self.num_samples = num_samples
        self.input_shape = tuple(int(d) for d in input_shape)
        self.num_classes = num_classes
        self.noise = noise
        self.data_seed = data_seed

    def declare_spec(self) -> DataSpec:
        return DataSpec(self.name, self.input_shape, self.num_classes)

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(self.data_seed)
        prototypes = rng.standard_normal((self.num_classes, *self.input_shape))
        y = rng.integers(0, self.num_classes, self.num_samples)
        x = prototypes[y] + self.noise * rng.standard_normal((self.num_samples, *self.input_shape))
        return x.astype(np.float32), y.astype(np.int64)
