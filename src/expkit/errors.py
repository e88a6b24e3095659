"""Errors expkit raises for bad input: each names the key, the value and the fix.

Exit codes: 2 the configuration cannot work (nothing ran), 3 data or a checkpoint is missing or
unreadable, 1 the run failed while running (e.g. a non-finite loss), 128 + N stopped by signal N
after saving its state (143 SIGTERM, 130 Ctrl-C).
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn


class ExpkitError(Exception):
    """Base of expkit's expected errors (printed without a traceback by the entry points)."""

    exit_code = 1


class ConfigError(ExpkitError):
    """The composed configuration cannot work; nothing has been trained."""

    exit_code = 2


class IncompatibleModelData(ConfigError):
    """The model cannot consume the datamodule's declared shapes."""


class DataError(ExpkitError):
    """Data (or a checkpoint) is missing or unreadable."""

    exit_code = 3


class Interrupted(ExpkitError):
    """The run was stopped by a signal (SIGTERM, Ctrl-C) after saving its latest state; ``expkit
    resume`` continues it. Exit code 128 + the signal's number (143 for SIGTERM, 130 for SIGINT),
    as a shell reports a process ended by that signal."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = int(signum)
        self.exit_code = 128 + self.signum


class NonFiniteLoss(ExpkitError):
    """Training produced a NaN or infinite loss and was stopped."""

    exit_code = 1


def full_error() -> bool:
    """Whether the user asked for tracebacks with ``HYDRA_FULL_ERROR=1`` (Hydra's setting). Inside
    an entry point, and in the processes it starts, ``EXPKIT_FULL_ERROR`` carries that choice:
    expkit itself sets ``HYDRA_FULL_ERROR`` to explain Hydra's errors (``expkit.config.app``)."""
    if "EXPKIT_FULL_ERROR" in os.environ:
        return os.environ["EXPKIT_FULL_ERROR"] == "1"
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def exit_with(exc: ExpkitError) -> NoReturn:
    """Print ``error: <message>`` and exit with the error's code; ``HYDRA_FULL_ERROR=1`` re-raises
    it instead, traceback included."""
    if full_error():
        raise exc
    from expkit.secrets import mask_text

    print(f"error: {mask_text(str(exc))}", file=sys.stderr)
    sys.exit(exc.exit_code)
