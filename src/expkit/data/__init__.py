"""Datamodules: each declares ``spec`` (input shape, number of classes) before loading data."""

from expkit.data.base import ArrayDataModule, DataSpec
from expkit.data.digits import DigitsDataModule
from expkit.data.files import FilesDataModule
from expkit.data.mnist import MNISTDataModule
from expkit.data.synthetic import SyntheticDataModule
from expkit.data.tabular import SklearnTableDataModule
from expkit.data.text import CharTextDataModule

__all__ = [
    "ArrayDataModule",
    "CharTextDataModule",
    "DataSpec",
    "DigitsDataModule",
    "FilesDataModule",
    "MNISTDataModule",
    "SklearnTableDataModule",
    "SyntheticDataModule",
]
