"""A simple drift check: per-feature statistics of new data against the training data's.

A feature moved when its mean shifted by more than ``threshold`` pooled standard deviations
(``|mean_new - mean_ref| / sqrt((std_ref^2 + std_new^2) / 2)``), or its standard deviation changed
by more than a factor ``1 + threshold``. Features are the flattened inputs (a table's columns, an
image's pixels). The reference statistics are stored with every registered version
(``train_stats.json``), so the check works after the old data file has been replaced.
"""

from __future__ import annotations

from typing import Any

import numpy as np

DEFAULT_THRESHOLD = 0.5
FLOOR = 1e-6  # features constant in both data sets do not move


def drift(reference: dict[str, Any], new: dict[str, Any], threshold: float = DEFAULT_THRESHOLD,
          names: list[str] | None = None) -> dict[str, Any]:
    """Compare two :func:`expkit.registry.evaluation.feature_stats` results."""
    m0, s0 = np.asarray(reference["mean"]), np.asarray(reference["std"])
    m1, s1 = np.asarray(new["mean"]), np.asarray(new["std"])
    if m0.shape != m1.shape:
        return {"comparable": False, "reason": f"{m0.size} reference features, {m1.size} new ones", "moved": []}
    pooled = np.maximum(np.sqrt((s0**2 + s1**2) / 2), FLOOR)
    shift = np.abs(m1 - m0) / pooled
    ratio = np.maximum(s1, FLOOR) / np.maximum(s0, FLOOR)
    both_constant = (s0 < FLOOR) & (s1 < FLOOR) & (np.abs(m1 - m0) < FLOOR)
    moved = ((shift > threshold) | (ratio > 1 + threshold) | (ratio < 1 / (1 + threshold))) & ~both_constant
    names = names or [f"x{i}" for i in range(m0.size)]
    rows = [{"feature": names[i], "mean_ref": float(m0[i]), "mean_new": float(m1[i]), "std_ref": float(s0[i]),
             "std_new": float(s1[i]), "mean_shift_sd": float(shift[i]), "std_ratio": float(ratio[i])}
            for i in np.flatnonzero(moved)]
    rows.sort(key=lambda r: -r["mean_shift_sd"])
    return {"comparable": True, "threshold": threshold, "features": int(m0.size), "moved": rows,
            "reference_samples": reference.get("samples"), "new_samples": new.get("samples")}


def drift_table(result: dict[str, Any], limit: int = 20):
    from rich.table import Table

    if not result["comparable"]:
        table = Table(title=f"Drift: not comparable ({result['reason']})")
        return table
    moved = result["moved"]
    table = Table(title=f"Drift: {len(moved)} of {result['features']} features moved beyond {result['threshold']:g} "
                        f"(new {result['new_samples']} vs training {result['reference_samples']} samples)")
    for column in ("feature", "mean (train)", "mean (new)", "std (train)", "std (new)", "shift (sd)", "std ratio"):
        table.add_column(column)
    for row in moved[:limit]:
        table.add_row(row["feature"], *(f"{row[k]:.3f}" for k in ("mean_ref", "mean_new", "std_ref", "std_new",
                                                                   "mean_shift_sd", "std_ratio")))
    if len(moved) > limit:
        table.add_row(f"... {len(moved) - limit} more", *[""] * 6)
    return table
