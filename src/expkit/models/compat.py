"""Refuse a model that cannot consume the data, before anything is built or trained."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hydra.utils import get_class

from expkit.data.base import DataSpec
from expkit.errors import IncompatibleModelData


def check_model_fits_data(model_cfg: Mapping[str, Any], spec: DataSpec) -> None:
    """Raise :class:`IncompatibleModelData` naming both sides when ``model_cfg.net`` cannot take ``spec``.

    Sizes are derived from the data; a config that pins ``num_classes`` or ``input_shape`` by
    hand must agree with it.
    """
    net_cfg = model_cfg["net"]
    net_cls = get_class(net_cfg["_target_"])
    label = f"model '{net_cls.__name__}' ({net_cfg['_target_']})"
    reason = net_cls.accepts(tuple(spec.input_shape)) if hasattr(net_cls, "accepts") else None
    if reason:
        raise IncompatibleModelData(f"{label} cannot be trained on {spec.describe()}: it {reason}. Pick another model or data.")
    pinned_classes = net_cfg.get("num_classes")
    if pinned_classes is not None and int(pinned_classes) != spec.num_classes:
        raise IncompatibleModelData(
            f"{label} sets model.net.num_classes={pinned_classes} but {spec.describe()}: remove "
            "model.net.num_classes (it is derived from the data) or pick matching data."
        )
    pinned_shape = net_cfg.get("input_shape")
    if pinned_shape is not None and tuple(pinned_shape) != tuple(spec.input_shape):
        raise IncompatibleModelData(
            f"{label} sets model.net.input_shape={list(pinned_shape)} but {spec.describe()}: remove "
            "model.net.input_shape (it is derived from the data) or pick matching data."
        )


def build_model(model_cfg: Mapping[str, Any], spec: DataSpec) -> Any:
    """The model ``model_cfg`` describes, sized for the data (``spec``): checked to fit it first."""
    from hydra.utils import instantiate

    check_model_fits_data(model_cfg, spec)
    return instantiate(model_cfg, input_shape=spec.input_shape, num_classes=spec.num_classes, _convert_="all")
