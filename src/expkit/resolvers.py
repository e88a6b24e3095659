"""OmegaConf resolvers used by conf/hydra (never by the composed job config, which DVC reads)."""

from __future__ import annotations

import secrets

from omegaconf import OmegaConf


def register() -> None:
    # A short random id keeps two runs started in the same second in separate directories.
    if not OmegaConf.has_resolver("expkit.uid"):
        OmegaConf.register_new_resolver("expkit.uid", lambda: secrets.token_hex(3), use_cache=True)


register()
