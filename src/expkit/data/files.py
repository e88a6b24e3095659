"""The user's own data: a CSV/Parquet table, an ``.npz`` archive or a folder of images by class."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from expkit.data.base import ArrayDataModule, DataSpec
from expkit.errors import ConfigError, DataError

TABLE_SUFFIXES = {".csv", ".parquet", ".pq"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff"}


class FilesDataModule(ArrayDataModule):
    """Classification data read from ``path``.

    - a table (``.csv``, ``.parquet``): one row per sample, the label in ``target_column``, the
      features in ``feature_columns`` (default: every other column), all numeric;
    - an ``.npz`` archive with arrays ``x_key`` (samples, any shape) and ``y_key`` (labels);
    - a folder with one sub-folder of images per class (``path/cat/1.png``), read as
      ``image_mode`` (``L`` grey or ``RGB``) and resized to ``image_size`` when given.

    Labels may be any values; they are mapped to ``0..K-1`` in sorted order (``classes``).
    """

    def __init__(
        self,
        path: str,
        target_column: str = "label",
        feature_columns: list[str] | None = None,
        x_key: str = "x",
        y_key: str = "y",
        image_mode: str = "L",
        image_size: tuple[int, int] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if not path:
            raise ConfigError("data.path is not set: pass data.path=/path/to/table.csv (or .parquet, .npz, an image folder).")
        self.path = Path(path)
        self.name = self.path.name
        self.target_column = target_column
        self.feature_columns = list(feature_columns) if feature_columns else None
        self.x_key, self.y_key = x_key, y_key
        self.image_mode = image_mode
        self.image_size = tuple(image_size) if image_size else None
        self.classes: list = []
        self._arrays: tuple[np.ndarray, np.ndarray] | None = None

    def declare_spec(self) -> DataSpec:
        # A user's file has no fixed shape: read it once (cached for setup()).
        x, _ = self.load_arrays()
        return DataSpec(self.name, tuple(x.shape[1:]), len(self.classes))

    def source_files(self) -> list[Path]:
        return [self.path]

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if self._arrays is None:
            if not self.path.exists():
                raise DataError(f"data.path={self.path}: no such file or directory.")
            if self.path.is_dir():
                x, labels = self._read_image_folder()
            elif self.path.suffix.lower() in TABLE_SUFFIXES:
                x, labels = self._read_table()
            elif self.path.suffix.lower() == ".npz":
                x, labels = self._read_npz()
            else:
                raise DataError(
                    f"data.path={self.path}: unsupported file type {self.path.suffix!r}; "
                    "use .csv, .parquet, .npz or a folder of images."
                )
            self.classes, y = np.unique(labels, return_inverse=True)
            self.classes = self.classes.tolist()
            if len(self.classes) < 2:
                raise DataError(f"{self.path}: labels have {len(self.classes)} distinct value(s); need 2 or more.")
            self._arrays = (x, y.astype(np.int64))
        return self._arrays

    def _read_table(self) -> tuple[np.ndarray, np.ndarray]:
        import pandas as pd

        try:
            table = pd.read_parquet(self.path) if self.path.suffix.lower() != ".csv" else pd.read_csv(self.path)
        except Exception as exc:  # pandas raises many types for unreadable files
            raise DataError(f"{self.path}: cannot be read as a table ({exc}).") from exc
        if self.target_column not in table.columns:
            raise DataError(
                f"{self.path}: no target column {self.target_column!r} (data.target_column); "
                f"columns are {list(table.columns)}."
            )
        features = self.feature_columns or [c for c in table.columns if c != self.target_column]
        missing = [c for c in features if c not in table.columns]
        if missing:
            raise DataError(f"{self.path}: data.feature_columns names missing columns {missing}.")
        for column in features:
            if not pd.api.types.is_numeric_dtype(table[column]):
                raise DataError(
                    f"{self.path}: column {column!r} has dtype {table[column].dtype}, expected numbers; "
                    "encode it or leave it out of data.feature_columns."
                )
            if table[column].isna().any():
                raise DataError(f"{self.path}: column {column!r} has missing values; fill or drop them first.")
        return table[features].to_numpy(np.float32), table[self.target_column].to_numpy()

    def _read_npz(self) -> tuple[np.ndarray, np.ndarray]:
        try:
            with np.load(self.path, allow_pickle=False) as archive:
                for key in (self.x_key, self.y_key):
                    if key not in archive:
                        raise DataError(
                            f"{self.path}: no array {key!r} (data.x_key / data.y_key); "
                            f"arrays are {list(archive.keys())}."
                        )
                x, y = archive[self.x_key].astype(np.float32), archive[self.y_key]
        except (OSError, ValueError) as exc:
            raise DataError(f"{self.path}: cannot be read as .npz ({exc}).") from exc
        if len(x) != len(y):
            raise DataError(f"{self.path}: {len(x)} samples in {self.x_key!r} but {len(y)} labels in {self.y_key!r}.")
        return x, y

    def _read_image_folder(self) -> tuple[np.ndarray, np.ndarray]:
        from PIL import Image

        images, labels = [], []
        for class_dir in sorted(p for p in self.path.iterdir() if p.is_dir()):
            for file in sorted(class_dir.iterdir()):
                if file.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                try:
                    image = Image.open(file).convert(self.image_mode)
                except Exception as exc:
                    raise DataError(f"{file}: cannot be read as an image ({exc}).") from exc
                if self.image_size:
                    image = image.resize(tuple(reversed(self.image_size)))  # PIL takes (width, height)
                array = np.asarray(image, dtype=np.float32) / 255.0
                images.append(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))
                labels.append(class_dir.name)
        if not images:
            raise DataError(f"{self.path}: no images found in class sub-folders (expected {self.path}/<class>/<image>.png).")
        if len({im.shape for im in images}) > 1:
            raise DataError(f"{self.path}: images differ in size; set data.image_size=[H,W] to resize them.")
        return np.stack(images), np.asarray(labels)
