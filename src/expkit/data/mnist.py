"""MNIST from a local folder in torchvision's layout (``root/MNIST/raw``); downloads only when asked."""

from __future__ import annotations

import gzip
import urllib.request
from pathlib import Path

import numpy as np

from expkit.data.base import ArrayDataModule, DataSpec, Splits, split_indices
from expkit.errors import DataError

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (MNIST's format), plain or gzipped."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path}: not an unsigned-byte IDX file; delete it and download again.")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


class MNISTDataModule(ArrayDataModule):
    """MNIST 28x28 digits; the official test set is the test split, ``val_fraction`` of train is val.

    Args:
        root: folder holding ``MNIST/raw/*-ubyte[.gz]`` (torchvision's layout).
        download: fetch the four files (~11 MB) into ``root`` if they are missing.
    """

    name = "mnist"

    def __init__(self, root: str = "data/mnist", download: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.root = Path(root)
        self.download = download

    def declare_spec(self) -> DataSpec:
        return DataSpec(self.name, (1, 28, 28), 10)

    def source_files(self) -> list[Path]:
        return [self.root / "MNIST" / "raw"]

    def _file(self, key: str) -> Path:
        raw = self.root / "MNIST" / "raw"
        for name in (FILES[key], FILES[key] + ".gz"):
            if (raw / name).is_file():
                return raw / name
        if not self.download:
            raise DataError(
                f"MNIST file {FILES[key]} not found under {raw}: run with data.download=true "
                f"to fetch it (~11 MB in all), or copy torchvision's MNIST/raw files to {raw}."
            )
        raw.mkdir(parents=True, exist_ok=True)
        target = raw / (FILES[key] + ".gz")
        urllib.request.urlretrieve(MIRROR + target.name, target)
        return target

    def load_splits(self) -> Splits:
        def images(key: str) -> np.ndarray:
            return (read_idx(self._file(key)).astype(np.float32) / 255.0)[:, None]

        x_train, y_train = images("train_images"), read_idx(self._file("train_labels")).astype(np.int64)
        x_test, y_test = images("test_images"), read_idx(self._file("test_labels")).astype(np.int64)
        idx = split_indices(len(y_train), self.val_fraction, 0.0, self.split_seed)
        return {
            "train": (x_train[idx["train"]], y_train[idx["train"]]),
            "val": (x_train[idx["val"]], y_train[idx["val"]]),
            "test": (x_test, y_test),
        }
