"""Export scikit-learn's bundled digits as a raw ``.npz`` file (the DVC pipeline's default input).

    python -m expkit.pipeline.digits data/raw/digits.npz

``x``: float32 ``(1797, 1, 8, 8)`` in [0, 1] (the same values ``data=digits`` trains on), ``y``:
int64 labels. The archive's bytes are deterministic (fixed zip timestamps), so the file's DVC
hash is the same on every machine and ``dvc.lock`` stays valid after a fresh ``dvc repro``.
"""

from __future__ import annotations

import io
import sys
import zipfile
from pathlib import Path

import numpy as np

FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest zip timestamp: no wall clock in the bytes


def write_npz(path: Path, **arrays: np.ndarray) -> Path:
    """Like ``np.savez`` (readable by ``np.load``) but byte-for-byte reproducible."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=FIXED_TIME), buffer.getvalue())
    return path


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The arrays ``DigitsDataModule.load_arrays`` gives (a test holds them equal), without
    importing Lightning: this stage then starts in a second, not five."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return (bunch.images / 16.0).astype(np.float32)[:, None, :, :], bunch.target.astype(np.int64)


def export_digits(path: Path) -> Path:
    x, y = digits_arrays()
    return write_npz(path, x=x, y=y)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m expkit.pipeline.digits <output.npz>", file=sys.stderr)
        return 2
    print(f"wrote {export_digits(Path(args[0]))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
