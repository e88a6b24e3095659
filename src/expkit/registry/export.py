"""Export a trained model to TorchScript or ONNX, and check the export on the test split.

The exported graph takes *raw* features (the standardization of the training data is inside it)
and returns logits, so a consumer needs no expkit code. The check runs the exported file (the
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
from expkit.registry import evaluation

FORMATS = {"onnx": "model.onnx", "torchscript": "model.pt"}
ATOL, RTOL = 1e-4, 1e-4


class ExportMismatch(ExpkitError):
    """The exported model's outputs differ from the Lightning model's beyond the tolerance."""


def exportable(trained: evaluation.TrainedModel):
    """The network with the training data's standardization in front: raw features in, logits out."""
    import torch
    from torch import nn

    class Exported(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = trained.model.net
            scale = trained.feature_mean is not None
            self.register_buffer("mean", torch.as_tensor(trained.feature_mean if scale else 0.0, dtype=torch.float32))
            self.register_buffer("std", torch.as_tensor(trained.feature_std if scale else 1.0, dtype=torch.float32))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net((x - self.mean) / self.std)

    return Exported().eval()


def export(source: str | Path, fmt: str, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Export ``source`` (run dir or checkpoint) as ``fmt``; check it; write ``<file>.check.json``."""
    import torch

    if fmt not in FORMATS:
        raise ExpkitError(f"--format {fmt}: choose one of {', '.join(FORMATS)}.")
    trained = evaluation.load_trained(source)
    out_dir = Path(out_dir) if out_dir else evaluation.run_dir_of(trained.path) / "export"
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / FORMATS[fmt]
    x_test, y_test = evaluation.raw_splits(trained.run_config["data"])["test"]
    module = exportable(trained)
    example = torch.as_tensor(x_test[:2], dtype=torch.float32)
    with torch.no_grad():
        if fmt == "torchscript":
            torch.jit.save(torch.jit.trace(module, example), str(target))
        else:
            import logging
            import warnings

            # The exporter warns about torchvision ops it skips and about its own internals: noise here.
            logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
            warnings.filterwarnings("ignore", category=FutureWarning, module="copyreg")
            batch = torch.export.Dim("batch", min=1)
            program = torch.onnx.export(module, (example,), dynamo=True, input_names=["input"], output_names=["logits"],
                                        dynamic_shapes=({0: batch},), verbose=False)
            program.save(str(target))
    check = check_export(target, fmt, trained, x_test)
    check.update(source=str(trained.path), format=fmt, file=str(target), input_shape=list(trained.input_shape),
                 preprocessing="standardization inside the graph" if trained.feature_mean is not None else "none",
                 test_samples=int(len(y_test)))
    (out_dir / f"{target.name}.check.json").write_text(json.dumps(check, indent=2) + "\n")
    if not check["passed"]:
        raise ExportMismatch(f"{target}: outputs differ from the Lightning model (max abs diff {check['max_abs_diff']:.3g}, "
                             f"tolerance {ATOL:g} + {RTOL:g}*|ref|, {check['argmax_agreement']:.4f} same predictions).")
    return check


def run_exported(path: Path, fmt: str, x: np.ndarray) -> np.ndarray:
    """Logits of an exported file on raw features ``x`` (TorchScript, or onnxruntime for ONNX)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: x})[0]
    import torch

    module = torch.jit.load(str(path))
    with torch.no_grad():
        return module(torch.as_tensor(x)).numpy()


def check_export(path: Path, fmt: str, trained: evaluation.TrainedModel, x: np.ndarray) -> dict[str, Any]:
    reference = trained.logits(x)
    exported = run_exported(path, fmt, x)
    diff = np.abs(exported - reference)
    within = bool(exported.shape == reference.shape and (diff <= ATOL + RTOL * np.abs(reference)).all())
    agreement = float((exported.argmax(axis=1) == reference.argmax(axis=1)).mean())
    return {"passed": within and agreement == 1.0, "max_abs_diff": float(diff.max()), "atol": ATOL, "rtol": RTOL,
            "argmax_agreement": agreement, "runtime": "onnxruntime" if fmt == "onnx" else "torch.jit"}
