"""Errors expkit raises for bad input: each names the key, the value and the fix."""


class ExpkitError(Exception):
    """Base of expkit's expected errors (printed without a traceback by the entry points)."""

    exit_code = 1


class ConfigError(ExpkitError):
    """The composed configuration cannot work; nothing has been trained."""

    exit_code = 2


class IncompatibleModelData(ConfigError):
    """The model cannot consume the datamodule's declared shapes."""


class DataError(ExpkitError):
    """Data is missing or unreadable."""

    exit_code = 3
