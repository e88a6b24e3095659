"""Metric names: the one place they are defined (imported by models, tasks and validation).

Keys are ``<stage>/<name>``: ``train/loss``, ``val/acc``, ``test/acc`` ...
This module imports nothing heavy so configuration checks can use it.
"""

from __future__ import annotations

STAGES = ("train", "val", "test")
LOSS = "loss"
ACCURACY = "acc"
NAMES = (LOSS, ACCURACY)


def metric_key(stage: str, name: str) -> str:
    """``metric_key("val", "acc") == "val/acc"``."""
    return f"{stage}/{name}"


ALL_KEYS = tuple(metric_key(stage, name) for stage in STAGES for name in NAMES)
