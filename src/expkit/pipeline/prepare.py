"""DVC stage ``prepare``: split the raw data once and save the splits as memory-mappable arrays.

    python -m expkit.pipeline.prepare             # reads `data` from params.yaml

The ``data`` config of ``params.yaml`` (normally ``data=files`` on ``data/raw/...``) is built with
its own loader and its own seeded split (``val_fraction``, ``test_fraction``, ``split_seed``:
defined there and nowhere else); the splits go to ``data.processed_dir`` in the layout of
:mod:`expkit.data.processed`. The same input and settings give the same bytes.
"""

from __future__ import annotations

import sys
from pathlib import Path

from expkit.errors import ConfigError, ExpkitError, exit_with
from expkit.pipeline import PARAMS_FILE


def prepare(data_cfg) -> Path:
    """Load and split ``data_cfg``'s source; write the splits to ``data_cfg.processed_dir``."""
    from hydra.utils import instantiate

    from expkit.data.processed import SPLIT_KEYS, write_processed

    out_dir = data_cfg.get("processed_dir")
    if not out_dir:
        raise ConfigError(
            f"data.processed_dir is not set in {PARAMS_FILE}: set it in conf/pipeline.yaml "
            "(e.g. data/processed) and regenerate params.yaml (python -m expkit.pipeline.params)."
        )
    datamodule = instantiate(data_cfg, processed_dir=None)  # read the source, not a previous output
    splits = datamodule.load_splits()
    datamodule._check(splits)  # shapes and labels agree with the declared spec
    spec = datamodule.spec
    write_processed(
        Path(out_dir), splits, spec=spec, split={key: getattr(datamodule, key) for key in SPLIT_KEYS},
        classes=getattr(datamodule, "classes", None) or None,
    )
    counts = ", ".join(f"{stage} {len(y)}" for stage, (_, y) in splits.items())
    print(f"prepared {spec.describe()} -> {out_dir} ({counts})")
    return Path(out_dir)


def load_params(path: Path = Path(PARAMS_FILE)):
    from omegaconf import OmegaConf

    if not path.is_file():
        raise ConfigError(f"{path} not found: run from the repository root, or create it with python -m expkit.pipeline.params.")
    return OmegaConf.load(path)


def main() -> int:
    try:
        prepare(load_params().data)
    except ExpkitError as exc:
        exit_with(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
