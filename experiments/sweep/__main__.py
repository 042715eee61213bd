"""``python -m experiments.sweep``: plan, launch, track and analyse a sweep (driver.py).

Hydra's entry point lives here, in the file run as ``__main__``, so Hydra finds conf/ by this
file's path (a decorated function in an imported module would need conf/ to be a package)."""

import hydra
from omegaconf import DictConfig

from experiments.sweep import driver


@hydra.main(config_path="../../conf", config_name="launch", version_base="1.3")
def main(cfg: DictConfig) -> None:
    driver.main(cfg)


if __name__ == "__main__":
    main()
