"""The DVC pipeline (``dvc.yaml``): raw file -> ``prepare`` -> ``train`` -> ``evaluate``.

- :mod:`~expkit.pipeline.params`: compose ``conf/pipeline.yaml`` into ``params.yaml``, exactly as
  ``dvc exp run`` does, and check that the committed file is still that composition.
- :mod:`~expkit.pipeline.digits`: export scikit-learn's bundled digits as the raw file.
- :mod:`~expkit.pipeline.prepare`: split the raw data once into memory-mappable arrays.
- :mod:`~expkit.pipeline.evaluate`: test metrics, predictions and a confusion matrix for DVC.

The ``train`` stage is ``train.py`` itself, reading ``params.yaml`` as its config.
"""

PARAMS_FILE = "params.yaml"
# DVC composes this primary config of conf/ into params.yaml (.dvc/config: hydra.config_name).
PIPELINE_CONFIG = "pipeline"
