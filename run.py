"""Entry point: `python run.py method=gsi dataset=olympiad`, or `python run.py -m beta=0.5,1,2 ...` for sweeps.

Hydra composes and validates the config first; the heavy imports (vLLM, torch) happen only after that.
"""

import hydra
from omegaconf import DictConfig

from gsi.config import register_configs

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig):
    from gsi.preview import check_multirun

    check_multirun()  # a sweep preset without -m says so instead of running its first job
    from gsi.run import run  # heavy: imported only once the config is known to be valid

    return run(cfg)


if __name__ == "__main__":
    main()
