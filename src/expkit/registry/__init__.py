"""From experiment to production: KPIs, the model registry, export, drift and the release report.

- :mod:`~expkit.registry.kpis`: the KPIs declared in ``conf/train.yaml`` (``kpis:``) and the one
  rule that decides whether a model beats another on them.
- :mod:`~expkit.registry.evaluation`: load a trained checkpoint, rebuild its data, evaluate it
  (KPI metrics, per-class metrics, latency) on a test split identified by a fingerprint.
- :mod:`~expkit.registry.store`: ``registry/registry.json`` and the version folders (DVC-tracked,
  W&B model artifacts): ``expkit register``, ``expkit promote``, ``expkit models``.
- :mod:`~expkit.registry.export`: TorchScript and ONNX export, checked against the Lightning model.
- :mod:`~expkit.registry.drift` and :mod:`~expkit.registry.report`: new data against production.
"""
