"""Read expkit checkpoints safely and check they fit a config, before anything is built.

Checkpoints load with ``torch.load(weights_only=True)``: tensors and plain containers only, no
pickled code runs. A checkpoint from a source you trust that holds other Python objects loads
with ``trust_checkpoint=true``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from expkit.errors import ConfigError, DataError, IncompatibleModelData
from expkit.models.classifier import RUN_CONFIG_KEY

TRUST_HINT = "if you trust the file's source, load it anyway with trust_checkpoint=true"


def load_checkpoint(path: str | None, *, trust: bool = False, key: str = "ckpt_path") -> dict:
    """The checkpoint at ``path`` (``key`` names the config key in errors), memory-mapped.

    Raises :class:`ConfigError` when unset and :class:`DataError` when missing, unreadable,
    unsafe to load (pickled objects, without ``trust``) or not an expkit checkpoint.
    """
    import pickle

    import torch

    if not path:
        raise ConfigError(f"{key} is not set: pass {key}=<run dir>/checkpoints/last.ckpt.")
    if not Path(path).is_file():
        raise DataError(f"{key}={path}: no such file.")
    try:
        try:  # mmap: only what is used is read, so checking a large checkpoint stays cheap
            checkpoint = torch.load(path, map_location="cpu", weights_only=not trust, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            checkpoint = torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+) was not an allowed global", str(exc))
        if found and not trust:
            raise DataError(
                f"{key}={path}: holds a pickled Python object ({found.group(1)}) that could run code "
                f"when loaded; {TRUST_HINT}."
            ) from None
        raise DataError(f"{key}={path}: not a readable checkpoint (corrupt or truncated); pass a complete .ckpt written by expkit.") from None
    except Exception as exc:
        raise DataError(
            f"{key}={path}: not a readable checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); "
            "is it a complete .ckpt file written by expkit?"
        ) from None
    if not isinstance(checkpoint, Mapping) or "state_dict" not in checkpoint or not checkpoint.get(RUN_CONFIG_KEY):
        raise DataError(f"{key}={path}: not an expkit checkpoint (no state_dict or run config); pass a .ckpt from an expkit run.")
    return dict(checkpoint)


def check_checkpoint_fits(checkpoint: Mapping[str, Any], path: str, spec: Any, model_cfg: Mapping | None, key: str = "ckpt_path") -> None:
    """Refuse a checkpoint trained on other shapes or with another network than ``model_cfg``."""
    hparams = checkpoint.get("hyper_parameters") or {}
    if "input_shape" in hparams and spec is not None:
        trained_on = (tuple(hparams["input_shape"]), int(hparams["num_classes"]))
        if (tuple(spec.input_shape), spec.num_classes) != trained_on:
            raise IncompatibleModelData(
                f"{key}={path} was trained on input shape {trained_on[0]} with {trained_on[1]} classes "
                f"and cannot be used with {spec.describe()}: pick matching data or another checkpoint."
            )
    recorded = (checkpoint.get(RUN_CONFIG_KEY) or {}).get("model", {}).get("net", {}).get("_target_")
    wanted = (model_cfg or {}).get("net", {}).get("_target_")
    if recorded and wanted and recorded != wanted:
        raise IncompatibleModelData(
            f"{key}={path} holds a {recorded} network but model.net._target_={wanted}: "
            "pick the model it was trained with (or another checkpoint)."
        )
