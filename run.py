"""Entry point: `python run.py method=gsi dataset=olympiad`, or `python run.py -m beta=0.5,1,2 ...` for sweeps.

Hydra composes the config against its typed schemas (unknown keys, wrong types, values outside a fixed set fail
there), then gsi.config.validate checks every numeric and cross-field rule (a Hydra callback, before the run folder is
made); the heavy imports (vLLM, torch) happen only after that.

The run's modules are imported inside main(), not at the top: the grading workers' forkserver re-imports this
script (multiprocessing preloads __main__), and they must not carry the run's modules (numpy, the engines) under
their memory cap.
"""

import hydra
from omegaconf import DictConfig

from gsi.config.schema import register_configs

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig):
    from gsi.cluster.preview import check_multirun
    from gsi.cluster.sweepjob import sweep_job

    check_multirun()  # a sweep preset without -m says so instead of running its first job
    with sweep_job():  # in a local sweep, one job's failure does not stop the jobs after it
        from gsi.config.validate import exit_if_invalid

        exit_if_invalid(cfg)  # again here: a sweep's jobs get their values only now
        from gsi.run import run

        return run(cfg)


if __name__ == "__main__":
    main()
