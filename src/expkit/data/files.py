"""The user's own data: a CSV/Parquet table, an ``.npz`` archive or a folder of images by class."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from expkit.config.suggest import did_you_mean
from expkit.data.base import ArrayDataModule, DataSpec
from expkit.errors import ConfigError, DataError

TASKS = ("classification", "regression")
TABLE_SUFFIXES = {".csv", ".parquet", ".pq"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff"}


class FilesDataModule(ArrayDataModule):
    """Classification or regression data read from ``path``.

    - a table (``.csv``, ``.parquet``): one row per sample, the label (or target) in
      ``target_column``, the features in ``feature_columns`` (default: every other column), all
      numeric;
    - an ``.npz`` archive with arrays ``x_key`` (samples, any shape) and ``y_key`` (labels, or
      targets of any shape);
    - a folder with one sub-folder of images per class (``path/cat/1.png``), read as
      ``image_mode`` (``L`` grey or ``RGB``) and resized to ``image_size`` when given
      (classification only).

    ``task=classification``: labels may be any values; they are mapped to ``0..K-1`` in sorted
    order (``classes``). ``task=regression``: targets are real numbers, used as they are.
    Predicting (``predict.py``) reads every sample of ``path``; its labels may be missing.
    """

    def __init__(
        self,
        path: str,
        task: str = "classification",
        target_column: str = "label",
        feature_columns: list[str] | None = None,
        x_key: str = "x",
        y_key: str = "y",
        image_mode: str = "L",
        image_size: tuple[int, int] | None = None,
        allow_pickle: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.allow_pickle = allow_pickle
        if task not in TASKS:
            raise ConfigError(f"data.task={task!r}: use one of {', '.join(TASKS)}.")
        self.task = task
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
        self.features: list[str] | None = None  # a table's feature columns, as training read them
        self._arrays: tuple[np.ndarray, np.ndarray] | None = None
        self._num_samples: int | None = None  # rows of a table, samples of an .npz, once peeked
        if self.feature_columns:
            if target_column in self.feature_columns:
                raise ConfigError(f"data.feature_columns=[{','.join(self.feature_columns)}] includes the target column {target_column!r} "
                                  "(data.target_column): the label would be an input; remove it from data.feature_columns.")
            twice = sorted({c for c in self.feature_columns if self.feature_columns.count(c) > 1})
            if twice:
                raise ConfigError(f"data.feature_columns=[{','.join(self.feature_columns)}] names {', '.join(twice)} more than once; list each column once.")

    def declare_spec(self) -> DataSpec:
        """Read only what the spec needs (a table's header and label column, an archive's array
        headers and labels, one image per folder), so validation stays cheap; ``setup`` reads
        everything and checks it against this."""
        if self._arrays is not None:
            return self._spec_of(tuple(self._arrays[0].shape[1:]), self._arrays[1])
        self._require_path()
        if self.path.is_dir():
            if self.task == "regression":
                raise ConfigError(f"data.path={self.path}: an image folder holds classes; data.task=regression needs a table or an .npz.")
            shape, labels = self._peek_image_folder()
        elif self.path.suffix.lower() in TABLE_SUFFIXES:
            shape, labels = self._peek_table()
        elif self.path.suffix.lower() == ".npz":
            shape, labels = self._peek_npz()
        else:
            raise self._unsupported()
        if self.task == "classification":
            self.classes = self._classes(labels)[0]
        return self._spec_of(shape, labels)

    def declared_num_samples(self) -> int | None:
        """The rows of a table or samples of an ``.npz``, counted from its label column or array
        header (an image folder's are counted when it is read)."""
        if self._arrays is not None:
            return len(self._arrays[1])
        self.spec  # noqa: B018 - peeking the file counts its samples
        return self._num_samples

    def _spec_of(self, shape: tuple[int, ...], labels: np.ndarray) -> DataSpec:
        if self.task == "classification":
            return DataSpec(self.name, shape, len(self.classes))
        return DataSpec(self.name, shape, target_shape=tuple(int(d) for d in np.shape(labels)[1:]))

    def _require_path(self) -> None:
        if not self.path.exists():
            raise DataError(f"data.path={self.path}: no such file or directory.")

    def _unsupported(self) -> DataError:
        return DataError(
            f"data.path={self.path}: unsupported file type {self.path.suffix!r}; "
            "use .csv, .parquet, .npz or a folder of images."
        )

    def _classes(self, labels: np.ndarray) -> tuple[list, np.ndarray]:
        classes, y = np.unique(labels, return_inverse=True)
        if len(classes) < 2:
            raise DataError(
                f"{self.path}: labels have {len(classes)} distinct value(s); need 2 or more "
                "(is data.target_column / data.y_key the label?)."
            )
        return classes.tolist(), y

    def _table_columns(self, columns: list[str]) -> list[str]:
        """The feature columns, after checking that the target and every feature exist."""
        if self.target_column not in columns:
            raise DataError(
                f"{self.path}: no target column {self.target_column!r} (data.target_column)."
                f"{did_you_mean(self.target_column, columns)} Columns are {columns}."
            )
        features = self.feature_columns or [c for c in columns if c != self.target_column]
        missing = [c for c in features if c not in columns]
        if missing:
            hint = did_you_mean(missing[0], columns)
            raise DataError(f"{self.path}: data.feature_columns names missing columns {missing}.{hint} Columns are {columns}.")
        if not features:
            raise DataError(f"{self.path}: no feature columns besides the target {self.target_column!r}.")
        return features

    def _check_table(self, table, features: list[str], *, sample: bool = False) -> None:
        import pandas as pd

        where = " (in its first rows)" if sample else ""
        labels = table[self.target_column] if self.target_column in table else None
        if labels is not None and labels.isna().any():
            raise DataError(f"{self.path}: target column {self.target_column!r} has missing values{where}; fill or drop those rows.")
        for column in features:
            if column not in table:
                continue
            if not pd.api.types.is_numeric_dtype(table[column]):
                raise DataError(
                    f"{self.path}: column {column!r} has dtype {table[column].dtype}, expected numbers{where}; "
                    "encode it or leave it out of data.feature_columns."
                )
            if table[column].isna().any():
                raise DataError(f"{self.path}: column {column!r} has missing values{where}; fill or drop them first.")
            if not np.isfinite(table[column].to_numpy(np.float64)).all():
                raise DataError(f"{self.path}: column {column!r} has infinite values{where}; clip or drop them first.")

    def _read_table_part(self, **kwargs):
        import pandas as pd

        try:
            if self.path.suffix.lower() == ".csv":
                return pd.read_csv(self.path, **kwargs)
            if "nrows" in kwargs:  # parquet: the schema, without the data
                import pyarrow.parquet as pq

                return pq.read_schema(self.path).empty_table().to_pandas()
            return pd.read_parquet(self.path, columns=kwargs.get("usecols"))
        except pd.errors.EmptyDataError:
            raise DataError(f"{self.path}: the file is empty (no header, no rows); write the table into it.") from None
        except Exception as exc:  # pandas and pyarrow raise many types for unreadable files
            raise DataError(f"{self.path}: cannot be read as a table ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}).") from exc

    def _check_header(self, columns: list[str], nameless: bool = True) -> None:
        """Refuse column names that pandas would silently change: a repeated name (the second
        ``a`` becomes ``a.1``) and, with ``nameless``, a nameless column among the features
        (``Unnamed: 0``, usually a row index saved with the table)."""
        raw = self._raw_columns()
        repeated = sorted({c for c in raw if raw.count(c) > 1})
        if repeated:
            name = repeated[0]
            places = [i + 1 for i, c in enumerate(raw) if c == name]
            raise DataError(f"{self.path}: {len(places)} columns are named {name!r} (columns {places}); pandas would rename "
                            f"the second to {name + '.1'!r}. Give each column its own name.")
        if nameless and self.feature_columns is None:
            unnamed = [c for c, r in zip(columns, raw, strict=False) if not r.strip() and c != self.target_column]
            if unnamed:
                raise DataError(f"{self.path}: a column has no name (read as {unnamed[0]!r}; often a row index saved with "
                                "the table, e.g. to_csv without index=False); name it, drop it, or list the features in "
                                "data.feature_columns.")

    def _raw_columns(self) -> list[str]:
        """The header's names as written in the file."""
        if self.path.suffix.lower() == ".csv":
            first = self._read_table_part(header=None, nrows=1, dtype=str, keep_default_na=False)
            return [str(c) for c in first.iloc[0]] if len(first) else []
        import pyarrow.parquet as pq

        try:  # pandas' saved index is not a column
            return [n for n in pq.read_schema(self.path).names if not n.startswith("__index_level_")]
        except Exception:  # noqa: BLE001 - reading the table names the problem
            return []

    def _peek_table(self) -> tuple[tuple[int, ...], np.ndarray]:
        header = self._read_table_part(nrows=0)
        columns = [str(c) for c in header.columns]
        self._check_header(columns)
        features = self._table_columns(columns)
        if self.path.suffix.lower() == ".csv":  # dtypes from the first rows; setup checks every row
            first = self._read_table_part(usecols=features, nrows=1000)
            if first.empty:
                raise DataError(f"{self.path}: a header ({len(columns)} columns) but no rows; add data rows.")
            self._check_table(first, features, sample=True)
        else:
            self._check_table(header, features)
        labels = self._read_table_part(usecols=[self.target_column])
        if labels.empty:
            raise DataError(f"{self.path}: a header ({len(columns)} columns) but no rows; add data rows.")
        self._check_table(labels, [])
        self._num_samples = len(labels)
        return (len(features),), labels[self.target_column].to_numpy()

    def _peek_npz(self) -> tuple[tuple[int, ...], np.ndarray]:
        import zipfile

        try:
            with zipfile.ZipFile(self.path) as archive:
                names = {n.removesuffix(".npy"): n for n in archive.namelist()}
                for key, setting in ((self.x_key, "data.x_key"), (self.y_key, "data.y_key")):
                    if key not in names:
                        raise DataError(
                            f"{self.path}: no array {key!r} ({setting}).{did_you_mean(key, names)} "
                            f"Arrays are {sorted(names)}."
                        )
                with archive.open(names[self.x_key]) as f:  # the array's header only
                    version = np.lib.format.read_magic(f)
                    read_header = {(1, 0): np.lib.format.read_array_header_1_0}.get(version, np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read_header(f)
            with np.load(self.path, allow_pickle=self.allow_pickle) as arrays:
                labels = self._array(arrays, self.y_key)
        except DataError:
            raise
        except Exception as exc:
            raise DataError(f"{self.path}: cannot be read as .npz ({type(exc).__name__}: {exc}).") from exc
        if dtype.kind not in "biuf":
            raise DataError(f"{self.path}: array {self.x_key!r} has dtype {dtype}, expected numbers.")
        if not shape or shape[0] != len(labels):
            raise DataError(f"{self.path}: {shape[0] if shape else 0} samples in {self.x_key!r} but {len(labels)} labels in {self.y_key!r}.")
        if shape[0] == 0:
            raise DataError(f"{self.path}: arrays {self.x_key!r} and {self.y_key!r} hold no samples; write the data into them.")
        self._num_samples = int(shape[0])
        return tuple(int(d) for d in shape[1:]), labels

    def _array(self, archive: Any, key: str) -> np.ndarray:
        """``archive[key]``; an array of pickled Python objects is refused unless trusted
        (``data.allow_pickle``, which follows ``trust_checkpoint``): unpickling can run code."""
        try:
            return archive[key]
        except ValueError as exc:
            if "allow_pickle" not in str(exc):
                raise
            raise DataError(f"{self.path}: array {key!r} holds pickled Python objects that could run code when loaded; "
                            "if you trust the file's source, load it anyway with trust_checkpoint=true "
                            "(data.allow_pickle follows it).") from None

    def _peek_image_folder(self) -> tuple[tuple[int, ...], np.ndarray]:
        from PIL import Image

        labels, first = [], None
        for class_dir in sorted(p for p in self.path.iterdir() if p.is_dir()):
            images = [f for f in sorted(class_dir.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
            if images:
                labels.append(class_dir.name)
                first = first or images[0]
        if first is None:
            raise DataError(f"{self.path}: no images found in class sub-folders (expected {self.path}/<class>/<image>.png).")
        try:
            with Image.open(first) as image:  # reads the header only
                width, height = image.size
                channels = len(Image.new(self.image_mode, (1, 1)).getbands())
        except Exception as exc:
            raise DataError(f"{first}: cannot be read as an image ({exc}).") from exc
        height, width = self.image_size or (height, width)
        return ((channels, height, width) if channels > 1 else (1, height, width)), np.asarray(labels)

    def source_files(self) -> list[Path]:
        return [self.path]

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if self._arrays is None:
            self._require_path()
            if self.path.is_dir():
                x, labels = self._read_image_folder()
            elif self.path.suffix.lower() in TABLE_SUFFIXES:
                x, labels = self._read_table()
            elif self.path.suffix.lower() == ".npz":
                x, labels = self._read_npz()
            else:
                raise self._unsupported()
            if self.task == "classification":
                self.classes, y = self._classes(labels)
                self._arrays = (x, y.astype(np.int64))
            else:
                self._arrays = (x, self._targets(labels))
        return self._arrays

    def state_dict(self) -> dict:
        """The base state, and a table's feature columns: predictions read the same columns."""
        if self.features is None and self.path.suffix.lower() in TABLE_SUFFIXES and self.path.is_file():
            header = self._read_table_part(nrows=0)
            self.features = self._table_columns([str(c) for c in header.columns])
        return {**super().state_dict(), **({"features": self.features} if self.features else {})}

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        if state_dict.get("features"):
            self.features = list(state_dict["features"])

    def _targets(self, values: np.ndarray) -> np.ndarray:
        """Regression targets as float32; a clear error for values that are not finite numbers."""
        try:
            y = np.asarray(values, dtype=np.float32)
        except (TypeError, ValueError):
            raise DataError(f"{self.path}: data.task=regression needs numeric targets ({self.target_column!r} / "
                            f"{self.y_key!r}); got {np.asarray(values).dtype}.") from None
        if not np.isfinite(y).all():
            raise DataError(f"{self.path}: regression targets have NaN or infinite values; clean them first.")
        return y

    def load_predict_inputs(self) -> np.ndarray:
        """Every sample of ``path``, whether or not it has labels (read as in training; the
        prepared splits of the DVC pipeline are not used)."""
        self._require_path()
        if self.path.is_dir():
            return self._read_image_folder(labelled=False)[0]
        if self.path.suffix.lower() in TABLE_SUFFIXES:
            table = self._read_table_part()
            table.columns = [str(c) for c in table.columns]
            self._check_header(list(table.columns), nameless=False)  # the features are training's
            features = self.feature_columns or self.features or [c for c in table.columns if c != self.target_column]
            missing = [c for c in features if c not in table.columns]
            if missing:
                raise DataError(f"{self.path}: the model was trained on columns {features}; {missing} missing.")
            self._check_table(table, features)
            self.features = features
            return table[features].to_numpy(np.float32)
        if self.path.suffix.lower() == ".npz":
            with np.load(self.path, allow_pickle=self.allow_pickle) as archive:
                if self.x_key not in archive:
                    raise DataError(f"{self.path}: no array {self.x_key!r} (data.x_key); arrays are {list(archive.keys())}.")
                x = self._array(archive, self.x_key).astype(np.float32)
            if not np.isfinite(x).all():
                raise DataError(f"{self.path}: inputs have NaN or infinite values; clean them first.")
            return x
        raise self._unsupported()

    def _read_table(self) -> tuple[np.ndarray, np.ndarray]:
        table = self._read_table_part()
        table.columns = [str(c) for c in table.columns]
        self._check_header(list(table.columns))
        if table.empty:
            raise DataError(f"{self.path}: a header ({len(table.columns)} columns) but no rows; add data rows.")
        features = self._table_columns(list(table.columns))
        self._check_table(table, features)
        self.features = features
        return table[features].to_numpy(np.float32), table[self.target_column].to_numpy()

    def _read_npz(self) -> tuple[np.ndarray, np.ndarray]:
        try:
            with np.load(self.path, allow_pickle=self.allow_pickle) as archive:
                for key in (self.x_key, self.y_key):
                    if key not in archive:
                        raise DataError(
                            f"{self.path}: no array {key!r} (data.x_key / data.y_key); "
                            f"arrays are {list(archive.keys())}."
                        )
                x, y = self._array(archive, self.x_key).astype(np.float32), self._array(archive, self.y_key)
        except DataError:
            raise
        except (OSError, ValueError) as exc:
            raise DataError(f"{self.path}: cannot be read as .npz ({exc}).") from exc
        if len(x) != len(y):
            raise DataError(f"{self.path}: {len(x)} samples in {self.x_key!r} but {len(y)} labels in {self.y_key!r}.")
        if len(x) == 0:
            raise DataError(f"{self.path}: arrays {self.x_key!r} and {self.y_key!r} hold no samples; write the data into them.")
        if not np.isfinite(x).all():
            raise DataError(f"{self.path}: array {self.x_key!r} has NaN or infinite values; clean them first.")
        return x, y

    def _read_image_folder(self, labelled: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """The images of the class sub-folders (``labelled``), or of the whole folder, recursively."""
        from PIL import Image

        images, labels = [], []
        if labelled:
            files = [(d.name, f) for d in sorted(p for p in self.path.iterdir() if p.is_dir()) for f in sorted(d.iterdir())]
        else:
            files = [(None, f) for f in sorted(self.path.rglob("*"))]
        for label, file in files:
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
            labels.append(label)
        if not images:
            raise DataError(f"{self.path}: no images found in class sub-folders (expected {self.path}/<class>/<image>.png).")
        if len({im.shape for im in images}) > 1:
            raise DataError(f"{self.path}: images differ in size; set data.image_size=[H,W] to resize them.")
        return np.stack(images), np.asarray(labels)
