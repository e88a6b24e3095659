"""Where expkit finds its config tree: the one place that knows."""

from __future__ import annotations

from pathlib import Path

CONFIG_PACKAGE = "expkit.conf"  # importable: ``hydra.searchpath=[pkg://expkit.conf]`` finds it
_CONF = Path(__file__).resolve().parent / "conf"


def config_dir() -> Path:
    """expkit's ``conf/`` tree: package data of ``expkit`` (``src/expkit/conf``; the checkout's
    top-level ``conf`` links to it), so regular and editable installs find it the same way."""
    if not (_CONF / "train.yaml").is_file():
        raise FileNotFoundError(f"expkit's config tree is missing at {_CONF}: reinstall expkit.")
    return _CONF
