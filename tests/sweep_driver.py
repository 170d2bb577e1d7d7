"""`python run.py -m ...` on the synthetic table engines, where some jobs' engines fail (for tests/test_tracking.py):

    python tests/sweep_driver.py -m seed=0,1,2 logger=wandb ... GSI_FAIL_START=0 GSI_FAIL_MIDRUN=1 (environment)

The job whose seed is $GSI_FAIL_START fails while its engines start (as a CUDA OOM at vLLM start-up does); the job
whose seed is $GSI_FAIL_MIDRUN has its small engine die on its third call (gsi.run turns that into exit status 1).
Everything else is run.py's own path: Hydra's basic launcher, gsi.cluster.sweepjob, gsi.run.run building the engines.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


class EngineDied(RuntimeError):
    pass


def engines_for(seed: int):
    from experiments.synthetic import table_engines_with_params

    def build():
        if str(seed) == os.environ.get("GSI_FAIL_START"):
            raise RuntimeError("CUDA out of memory while starting the big engine (simulated)")
        engines = table_engines_with_params()
        if str(seed) == os.environ.get("GSI_FAIL_MIDRUN"):
            small = engines.small
            base = type(small)

            class Dying(base):
                def generate(self, requests, **kw):
                    if self.stats.calls >= 2:
                        raise EngineDied("engine process died (simulated)")
                    return base.generate(self, requests, **kw)

            small.__class__ = Dying
        return engines

    return build


def main():
    import hydra

    from gsi.config.schema import register_configs

    register_configs()

    @hydra.main(version_base="1.3", config_path=str(ROOT / "conf"), config_name="config")
    def job(cfg):
        from experiments.synthetic import SyntheticGrader, synthetic_problems
        from gsi.run import run
        from gsi.cluster.sweepjob import sweep_job

        with sweep_job():
            return run(cfg, engines=engines_for(cfg.seed), problems=synthetic_problems(cfg), grader=SyntheticGrader())

    job()


if __name__ == "__main__":
    main()
