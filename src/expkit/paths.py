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


def check_name(key: str, value: object) -> None:
    """A value that forms part of a path under ``paths.log_dir`` (``task_name``) must be one plain
    folder name: no separators, not ``.`` or ``..``, so no run is written outside the log folder.

    Raises :class:`~expkit.errors.ConfigError` naming the key, the value and the fix.
    """
    import re

    from expkit.errors import ConfigError

    text = str(value)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", text) or text in (".", ".."):
        raise ConfigError(f"{key}={text!r}: must be a plain folder name (letters, digits, '_', '-', '.', '+'; no '/' "
                          f"or '..'): it names the run's folder under paths.log_dir. Pick e.g. {key}=my_task.")
