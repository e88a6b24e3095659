"""A bare Hydra app: the start-up floor for ``train.py --cfg job`` and ``--help``.

    python benchmarks/bare_hydra.py --cfg job
"""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="bare_conf", config_name="config")
def main(cfg: DictConfig) -> None:
    print(cfg)


if __name__ == "__main__":
    main()
