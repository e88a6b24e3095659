"""Checkpoints: what expkit adds to them from outside the module, and reading them safely.

Every checkpoint a run writes goes through :class:`RunCheckpointIO`, a Lightning ``CheckpointIO``
plugin the trainer is given. It adds the run's record under :data:`CHECKPOINT_KEY` (the resolved
config and the sizes the data declared), so ``eval.py``, ``predict.py``, the registry and
``expkit reproduce`` rebuild any ``LightningModule`` from the checkpoint alone; it stores the
module's hyperparameters as plain data, so the file loads with ``torch.load(weights_only=True)``;
and it writes atomically (a temporary file, then a rename), so a checkpoint on disk is always whole.

Checkpoints load with ``torch.load(weights_only=True)``: tensors and plain containers only, no
pickled code runs. A checkpoint from a source you trust that holds other Python objects loads
with ``trust_checkpoint=true``.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pytorch_lightning.plugins import TorchCheckpointIO

from expkit.errors import ConfigError, DataError

CHECKPOINT_KEY = "expkit"  # {"config": resolved run config, "sizes": the data's sizes}
HPARAM_KEYS = ("hyper_parameters", "datamodule_hyper_parameters")
TRUST_HINT = "if you trust the file's source, load it anyway with trust_checkpoint=true"


def plain(value: Any) -> Any:
    """``value`` as data ``torch.load(weights_only=True)`` reads: containers, numbers, strings,
    tensors. A ``functools.partial`` becomes its Hydra config (``_target_``, ``_partial_``, its
    arguments), an OmegaConf container a dict or list, any other object its class's name."""
    import numpy as np
    import torch
    from omegaconf import OmegaConf

    if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
        return value
    if OmegaConf.is_config(value):
        return plain(OmegaConf.to_container(value, resolve=True))
    if isinstance(value, Mapping):
        return {plain(k) if not isinstance(k, str) else k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [plain(v) for v in value]
        return tuple(items) if isinstance(value, tuple) else items
    if isinstance(value, (torch.Tensor, torch.Size, torch.dtype, torch.device)):
        return value
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, functools.partial):
        return {"_target_": _qualified_name(value.func), "_partial_": True, **plain(dict(value.keywords))}
    if isinstance(value, type) or callable(value) and hasattr(value, "__qualname__"):
        return _qualified_name(value)
    return f"<{_qualified_name(type(value))} object, not stored>"


def _qualified_name(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"


class RunCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO`` that adds the run's record, keeps every stored value
    loadable without unpickling code, and writes atomically.

    Args:
        record: what the run stores in every checkpoint under :data:`CHECKPOINT_KEY`, e.g.
            ``{"config": <resolved config>, "sizes": {"num_classes": 10}}``.
        trust: load checkpoints that hold pickled Python objects (``trust_checkpoint``).
    """

    def __init__(self, record: Mapping[str, Any] | None = None, trust: bool = False) -> None:
        super().__init__()
        from expkit.secrets import mask

        self.record = mask(plain(dict(record or {})))
        self.trust = trust

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        import torch

        from expkit.secrets import mask

        checkpoint = dict(checkpoint)
        for key in HPARAM_KEYS:
            if key in checkpoint:
                checkpoint[key] = mask(plain(dict(checkpoint[key])))
        for key in ("hparams_type", "datamodule_hparams_type", "hparams_name", "datamodule_hparams_name"):
            checkpoint.pop(key, None)  # a class object, or a name only the class above needs
        checkpoint[CHECKPOINT_KEY] = self.record
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)  # readers see the old file or the new one, never half of one
        except Exception as exc:
            tmp.unlink(missing_ok=True)  # frees the space the partial file took: the run record can still be written
            full = shutil.disk_usage(path.parent).free < (1 << 20)
            reason = "No space left on device" if full else f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            raise OSError(f"{path}: the checkpoint could not be written ({reason}); the previous {path.name}, if any, is "
                          "intact and `expkit resume` continues from it once there is room.") from exc
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def load_checkpoint(self, path: Any, map_location: Any | None = None, weights_only: bool | None = None) -> dict[str, Any]:
        return load_checkpoint(str(path), trust=self.trust or weights_only is False)


def load_checkpoint(path: str | Path | None, *, trust: bool = False, key: str = "ckpt_path") -> dict[str, Any]:
    """The checkpoint at ``path`` (``key`` names the config key in errors), memory-mapped.

    Raises :class:`ConfigError` when unset and :class:`DataError` when missing, unreadable or
    unsafe to load (pickled objects, without ``trust``).
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
        raise DataError(f"{key}={path}: not a readable checkpoint (corrupt or truncated); pass a complete .ckpt file.") from None
    except Exception as exc:
        raise DataError(
            f"{key}={path}: not a readable checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); "
            "is it a complete .ckpt file?"
        ) from None
    if not isinstance(checkpoint, Mapping) or "state_dict" not in checkpoint:
        raise DataError(f"{key}={path}: not a Lightning checkpoint (no state_dict); pass a .ckpt written by a Lightning run.")
    return dict(checkpoint)


def run_record_of(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """What the run stored in ``checkpoint`` (``config``, ``sizes``); ``{}`` for a checkpoint
    written outside expkit."""
    record = checkpoint.get(CHECKPOINT_KEY)
    return dict(record) if isinstance(record, Mapping) else {}


def epochs_trained(checkpoint: Mapping[str, Any]) -> int | None:
    """The epochs a Lightning checkpoint's fit had run when it was saved: its fit loop's processed
    epochs (an end-of-epoch save counts that epoch), else its ``epoch`` + 1; ``None`` when it holds
    neither (e.g. weights only)."""
    progress = ((checkpoint.get("loops") or {}).get("fit_loop") or {}).get("epoch_progress") or {}
    processed = (progress.get("current") or {}).get("processed")
    if isinstance(processed, int):
        return processed
    epoch = checkpoint.get("epoch")
    return epoch + 1 if isinstance(epoch, int) else None


def nothing_left_to_train(checkpoint: Mapping[str, Any], max_epochs: Any, key: str = "ckpt_path",
                          resuming: bool = False) -> ConfigError | None:
    """The error for fitting on from ``checkpoint`` with a ``trainer.max_epochs`` it has already
    reached: Lightning would stop at once and write no checkpoint (equal) or raise a
    ``MisconfigurationException`` (fewer). ``resuming`` (an interrupted run continued in its own
    directory): only fewer, since a run killed after its last epoch still finishes its validation
    and test. ``None`` when epochs are left, or there is no limit."""
    done = epochs_trained(checkpoint)
    if done is None or not isinstance(max_epochs, int) or max_epochs < 0 or max_epochs > done \
            or (resuming and max_epochs == done):
        return None
    return ConfigError(f"{key}: the checkpoint has trained {done} epochs and trainer.max_epochs={max_epochs}: "
                       f"nothing left to train; set trainer.max_epochs above {done} (e.g. "
                       f"trainer.max_epochs={done + max(max_epochs, 1)}), or evaluate it with eval.py.")
