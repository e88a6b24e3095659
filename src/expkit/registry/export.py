"""Export a trained model to TorchScript or ONNX, and check the export on the test split.

The exported graph is the module's ``forward``; it takes *raw* inputs (the standardization of the
training data, when the datamodule applies one, is inside it), so a consumer needs no expkit code. The check runs the exported file (the
TorchScript interpreter, or onnxruntime for ONNX) on the whole test split and compares its logits
with the Lightning model's: ``|exported - reference| <= ATOL + RTOL * |reference|`` everywhere and
the same predicted class for every sample. ONNX uses torch's dynamo-based exporter
(``torch.onnx.export(..., dynamo=True)``, needs ``onnxscript``), with a dynamic batch dimension.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from expkit.errors import ExpkitError
from expkit.rebuild import Rebuilt, batches, tensors_of
from expkit.registry import evaluation

FORMATS = {"onnx": "model.onnx", "torchscript": "model.pt"}
ATOL, RTOL = 1e-4, 1e-4


class ExportMismatch(ExpkitError):
    """The exported model's outputs differ from the Lightning model's beyond the tolerance."""


def _scaling(rebuilt: Rebuilt) -> tuple[np.ndarray, np.ndarray] | None:
    """The training data's standardization (mean, std), when the datamodule applies one."""
    mean, std = getattr(rebuilt.datamodule, "feature_mean", None), getattr(rebuilt.datamodule, "feature_std", None)
    return (np.asarray(mean), np.asarray(std)) if mean is not None and std is not None else None


def exportable(rebuilt: Rebuilt, module: Any = None):
    """The module's ``forward`` (or ``module``, e.g. its TorchScript), with the training data's
    standardization in front when its datamodule applies one: raw inputs in, outputs out."""
    import torch
    from torch import nn

    scaling = _scaling(rebuilt)

    class Exported(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.module = rebuilt.model if module is None else module
            self.register_buffer("mean", torch.as_tensor(scaling[0] if scaling else 0.0, dtype=torch.float32))
            self.register_buffer("std", torch.as_tensor(scaling[1] if scaling else 1.0, dtype=torch.float32))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.module((x - self.mean) / self.std) if scaling else self.module(x)

    return Exported().eval()


def export_inputs(rebuilt: Rebuilt) -> np.ndarray:
    """The test split's inputs (each batch's first tensor) as the exported file takes them: raw,
    before any standardization (read from a fresh datamodule with ``standardize`` off)."""
    from expkit.build import build_datamodule

    data_cfg = dict(rebuilt.config["data"])
    if _scaling(rebuilt) is not None and "standardize" in data_cfg:
        data_cfg["standardize"] = False
        datamodule = build_datamodule(data_cfg)
    else:
        datamodule = rebuilt.datamodule
    parts = [tensors_of(batch)[0].numpy() for batch in batches(datamodule, "test")]
    if not parts:
        raise ExpkitError(f"{rebuilt.path}: the test split is empty: nothing to check the export on.")
    return np.concatenate(parts)


def export(source: str | Path, fmt: str, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Export ``source`` (run dir or checkpoint) as ``fmt``; check it; write ``<file>.check.json``."""
    import torch

    if fmt not in FORMATS:
        raise ExpkitError(f"--format {fmt}: choose one of {', '.join(FORMATS)}.")
    trained = evaluation.load_trained(source)
    out_dir = Path(out_dir) if out_dir else evaluation.run_dir_of(trained.path) / "export"
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / FORMATS[fmt]
    x_test = export_inputs(trained)
    module = exportable(trained)
    example = torch.as_tensor(x_test[:2])
    with torch.no_grad():
        if fmt == "torchscript":
            # Lightning's own tracing (LightningModule.to_torchscript) of the module on scaled
            # inputs; torch.jit.trace of a LightningModule outside a Trainer fails on its properties.
            scaled = exportable(trained, module=torch.nn.Identity())(example)
            inner = trained.model.to_torchscript(method="trace", example_inputs=scaled)
            torch.jit.save(torch.jit.trace(exportable(trained, module=inner), example), str(target))
        else:
            import logging
            import warnings

            # The exporter warns about torchvision ops it skips and about its own internals: noise here.
            logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
            warnings.filterwarnings("ignore", category=FutureWarning, module="copyreg")
            batch = torch.export.Dim("batch", min=1)
            program = torch.onnx.export(module, (example,), dynamo=True, input_names=["input"], output_names=["output"],
                                        dynamic_shapes=({0: batch},), verbose=False)
            program.save(str(target))
    check = check_export(target, fmt, module, x_test, classifier="num_classes" in trained.sizes)
    check.update(source=str(trained.path), format=fmt, file=str(target), input_shape=list(x_test.shape[1:]),
                 preprocessing="standardization inside the graph" if _scaling(trained) is not None else "none",
                 test_samples=int(len(x_test)))
    (out_dir / f"{target.name}.check.json").write_text(json.dumps(check, indent=2) + "\n")
    if not check["passed"]:
        raise ExportMismatch(f"{target}: outputs differ from the Lightning model (max abs diff {check['max_abs_diff']:.3g}, "
                             f"tolerance {ATOL:g} + {RTOL:g}*|ref|, {check['argmax_agreement']:.4f} same predictions).")
    return check


def run_exported(path: Path, fmt: str, x: np.ndarray) -> np.ndarray:
    """Outputs of an exported file on raw inputs ``x`` (TorchScript, or onnxruntime for ONNX)."""
    x = np.ascontiguousarray(x)
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: x})[0]
    import torch

    module = torch.jit.load(str(path))
    with torch.no_grad():
        return module(torch.as_tensor(x)).numpy()


def check_export(path: Path, fmt: str, module: Any, x: np.ndarray, classifier: bool) -> dict[str, Any]:
    """Compare the exported file's outputs on ``x`` with ``module``'s; a classifier must also
    predict the same class for every sample."""
    import torch

    with torch.no_grad():
        reference = np.concatenate([module(torch.as_tensor(x[i : i + 512])).numpy() for i in range(0, len(x), 512)])
    exported = run_exported(path, fmt, x)
    diff = np.abs(exported - reference)
    within = bool(exported.shape == reference.shape and (diff <= ATOL + RTOL * np.abs(reference)).all())
    agreement = float((exported.argmax(axis=-1) == reference.argmax(axis=-1)).mean()) if classifier else 1.0
    return {"passed": within and agreement == 1.0, "max_abs_diff": float(diff.max()), "atol": ATOL, "rtol": RTOL,
            "argmax_agreement": agreement, "runtime": "onnxruntime" if fmt == "onnx" else "torch.jit"}
