"""expkit: declarative deep-learning experiments.

Hydra composes ``conf/``, PyTorch Lightning trains, W&B records, DVC reproduces.
This module stays import-light: ``python train.py --help`` must not import torch.
"""

__version__ = "0.1.0"
