"""Secrets never reach disk, logs or W&B: one masking rule for everything expkit writes.

What counts as a secret:
- the value of a key that names one: a word of the key (split at ``_ - .`` and case changes) is
  ``password``, ``passwd``, ``passphrase``, ``secret``, ``token``, ``credential(s)``, ``apikey``,
  or two neighbouring words are ``api key``, ``private key``, ``access key``, ``secret key``, ``auth
  token`` (``db_password``, ``apiKey``, ``aws.secret_access_key``; not ``tokenizer`` or
  ``max_tokens``); everything under such a key is masked;
- the password of a URL (``postgresql://user:pw@host/db`` -> ``postgresql://user:***@host/db``);
- the value of an environment variable whose name names a secret (``WANDB_API_KEY``), anywhere
  in any text.

The documented way to pass a secret is the environment: ``db_password: ${oc.env:DB_PASSWORD}``
stays that interpolation in every record (:func:`recordable`) and is resolved only where it is used.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

MASK = "***"
SECRET_WORDS = {"password", "passwd", "passphrase", "secret", "token", "credential", "credentials", "apikey"}
SECRET_PAIRS = {("api", "key"), ("private", "key"), ("access", "key"), ("secret", "key"), ("auth", "token")}
# Also as Hydra writes a multirun job's overrides, colons escaped: postgresql\://user\:pw@host.
URL_CREDENTIALS = re.compile(
    r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*\\?://[^:/@\s'\"\\]*)(?P<sep>\\?:)(?P<password>[^@/\s'\"]+)@")
ENV_REFERENCE = "${oc.env:"
# key=value and key: value where the key names a secret (command lines, overrides, log lines, YAML).
_ASSIGNMENT = re.compile(r"(?P<key>[+~]*[A-Za-z_][\w.\-/]*)(?P<sep>\s*[=:]\s*)(?P<value>\"[^\"]*\"|'[^']*'|[^\s,\]\}]+)")


def words(key: str) -> list[str]:
    """``db_password`` -> ``[db, password]``; ``apiKey`` -> ``[api, key]``."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", str(key))
    return [w for w in re.split(r"[\s_.\-/+~]+", spaced.lower()) if w]


def is_secret_key(key: Any) -> bool:
    """Whether a config key, argument or variable name names a secret (see the module docstring)."""
    parts = words(str(key))
    return any(p in SECRET_WORDS for p in parts) or any(pair in SECRET_PAIRS for pair in zip(parts, parts[1:], strict=False))


def secret_values() -> list[str]:
    """Values of environment variables whose names name a secret (at least 4 characters)."""
    return sorted((v for k, v in os.environ.items() if is_secret_key(k) and len(v) >= 4), key=len, reverse=True)


def mask_text(text: str) -> str:
    """``text`` with URL passwords, ``key=value`` / ``key: value`` of secret keys and the values
    of secret environment variables replaced by ``***``."""
    if not isinstance(text, str) or not text:
        return text
    text = URL_CREDENTIALS.sub(lambda m: f"{m['head']}{m['sep']}{MASK}@", text)

    def assignment(match: re.Match) -> str:
        if match["value"].startswith(ENV_REFERENCE) or match["value"] == MASK:
            return match[0]
        if not is_secret_key(match["key"]):  # the value may hold assignments: override_dirname: +db_password=x
            inner = _ASSIGNMENT.sub(assignment, match["value"])
            return f"{match['key']}{match['sep']}{inner}"
        return f"{match['key']}{match['sep']}{MASK}"

    text = _ASSIGNMENT.sub(assignment, text)
    for value in secret_values():
        text = text.replace(value, MASK)
    return text


def mask(value: Any) -> Any:
    """``value`` (any JSON/YAML-like structure) with secrets masked: every value under a secret
    key (except an unresolved ``${oc.env:...}``), and :func:`mask_text` on every string."""
    if isinstance(value, Mapping):
        return {k: (MASK if is_secret_key(k) and v not in (None, "") and not _env_reference(v) else mask(v))
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(mask(v) for v in value) if isinstance(value, tuple) else [mask(v) for v in value]
    if isinstance(value, str):
        return mask_text(value)
    return value


def _env_reference(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(ENV_REFERENCE)


def recordable(cfg: Any) -> Any:
    """A composed config as records keep it: resolved, except that ``${oc.env:...}``
    interpolations stay as written, and masked (:func:`mask`)."""
    from omegaconf import OmegaConf

    if not OmegaConf.is_config(cfg):
        return mask(cfg)
    return mask(keep_env_references(cfg))


def keep_env_references(cfg: Any) -> Any:
    """``cfg`` (an OmegaConf config) as a plain container, resolved except for values that hold a
    ``${oc.env:...}`` interpolation, which stay as written."""
    from omegaconf import OmegaConf

    def keep_references(raw: Any, value: Any) -> Any:
        if isinstance(raw, str) and ENV_REFERENCE in raw:
            return raw
        if isinstance(raw, dict) and isinstance(value, dict):
            return {k: keep_references(raw.get(k), v) for k, v in value.items()}
        if isinstance(raw, list) and isinstance(value, list) and len(raw) == len(value):
            return [keep_references(r, v) for r, v in zip(raw, value, strict=True)]
        return value

    raw = OmegaConf.to_container(cfg, resolve=False)
    return keep_references(raw, OmegaConf.to_container(cfg, resolve=True))


def write_masked_yaml(path: Any, data: Any) -> None:
    """Write ``data`` (a plain structure or an OmegaConf config, kept unresolved as Hydra saves
    it) to the YAML file ``path`` with its secrets masked (:func:`mask`), atomically."""
    import yaml
    from omegaconf import OmegaConf

    from expkit.tracking.files import write_atomic

    if OmegaConf.is_config(data):
        data = OmegaConf.to_container(data, resolve=False, enum_to_str=True)
    write_atomic(path, yaml.safe_dump(mask(data), sort_keys=False, default_flow_style=False))


def mask_yaml_file(path: Any) -> bool:
    """Rewrite a YAML file Hydra wrote (``.hydra/*.yaml``, ``multirun.yaml``) with its secrets
    masked, atomically; returns whether anything changed. Unreadable files are left alone."""
    from pathlib import Path

    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return False
    if mask(data) == data:
        return False
    write_masked_yaml(path, data)
    return True


def mask_hydra_files(hydra: Any) -> None:
    """Mask the files Hydra writes for a job: ``<job dir>/<hydra.output_subdir>/*.yaml`` (config,
    overrides, hydra) and, in a multirun, ``<sweep dir>/multirun.yaml``. ``hydra``: the job's
    ``hydra`` node (``cfg.hydra`` in a Hydra callback, ``HydraConfig.get()`` in the task).

    Hydra's callback ``expkit.tasks.common.MaskHydraFiles`` runs it for every job right after
    Hydra wrote them, whatever the job then does (runs, is skipped, cancelled or refused); expkit's
    tasks run it again as they start, for configs composed without expkit's ``hydra`` settings
    (``python train.py --config-dir . --config-name params``, DVC's stage)."""
    from pathlib import Path

    from hydra.types import RunMode

    if hydra.output_subdir is not None:
        for path in sorted((Path(hydra.runtime.output_dir) / str(hydra.output_subdir)).glob("*.yaml")):
            mask_yaml_file(path)
    if hydra.mode == RunMode.MULTIRUN:
        mask_yaml_file(Path(hydra.sweep.dir) / "multirun.yaml")


@contextmanager
def masked_argv() -> Iterator[None]:
    """``sys.argv`` with its secrets masked for the block, then restored: what starts in it (W&B's
    run, which records the command line) sees no secret; later readers (Lightning's DDP start of
    the other ranks) still get the real command line."""
    import sys

    original = list(sys.argv)
    sys.argv[:] = [mask_text(arg) for arg in original]
    try:
        yield
    finally:
        sys.argv[:] = original


def mask_warnings() -> None:
    """Mask secrets in every warning this process prints (``warnings.showwarning``), e.g.
    Lightning's hint to use ``srun``, which quotes the command line. Idempotent."""
    import warnings

    show = warnings.showwarning
    if getattr(show, "masks_secrets", False):
        return

    def showwarning(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        text = str(message)
        masked = mask_text(text)
        show(message if masked == text else masked, category, filename, lineno, file, line)

    showwarning.masks_secrets = True  # type: ignore[attr-defined]
    warnings.showwarning = showwarning


class MaskSecrets(logging.Filter):
    """A logging filter (conf/hydra/default.yaml puts it on every handler of Hydra's and the
    job's logging) that masks secrets in each record's message. Hydra creates it when it sets up
    the logging of a command and of each job, in every process that runs one: it masks the
    warnings printed there too (:func:`mask_warnings`), which bypass logging."""

    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        mask_warnings()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is left to logging to report
            return True
        masked = mask_text(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True
