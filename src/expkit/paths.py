"""Where expkit finds its config tree: the one place that knows."""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent


def config_dir() -> Path:
    """The ``conf/`` tree: top-level ``conf/`` of a source checkout, else the copy in the wheel."""
    for candidate in (_HERE.parents[1] / "conf", _HERE / "conf"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise FileNotFoundError(
        f"expkit's config tree was not found next to {_HERE}: reinstall expkit "
        "(pip install -e . from a checkout) so that conf/ is available."
    )
