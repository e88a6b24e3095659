"""A bare Hydra app on expkit's own ``conf/`` (``train.yaml``): the start-up floor for
``train.py --cfg job`` and ``--help``, composing exactly the same configs.

    python benchmarks/bare_hydra.py --cfg job

Its task only prints the config; the one expkit import is the resolver module that
``conf/hydra`` needs to resolve the run directory (it imports only OmegaConf).
"""

from pathlib import Path

import hydra
from omegaconf import DictConfig

import expkit.resolvers  # noqa: F401  (conf/hydra's ${expkit.uid:})

CONF = Path(__file__).resolve().parents[1] / "src" / "expkit" / "conf"  # expkit.paths.config_dir()


@hydra.main(version_base="1.3", config_path=str(CONF), config_name="train")
def main(cfg: DictConfig) -> None:
    print(cfg)


if __name__ == "__main__":
    main()
