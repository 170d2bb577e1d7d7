"""Run folders in seconds, without models: the real run wiring (gsi.run.run) on the exact-table engines.

For the tests of tracking and reports, and to try the report command on a laptop. It takes run.py's Hydra
overrides, `-m` sweeps and `+experiment=` presets; the model and hardware settings are ignored (use
generation.max_steps=3 or so: every synthetic problem runs to max_steps):

    python -m experiments.synthetic -m +experiment=tiny_sweep hydra.sweep.dir=outputs/synthetic/tiny
    python -m experiments.synthetic -m method=bon method.policy=small,big method.n=1,4,16 \\
        generation.max_steps=4 dataset.limit=100 hydra.sweep.dir=outputs/synthetic/bon
    python -m experiments.report outputs/synthetic --out outputs/synthetic/report

`synthetic_sweep(root)` makes a sweep of methods x n x beta (x seed, with sweep["seed"]) in-process (what the
report tests use).

A "problem" is a run of table steps s0..s3 (gsi.engines.table); the synthetic grader calls a response
correct when its last three steps are good ones (s1 or s3: the two with reward >= 0.7), so accuracy depends on
the method, n and beta the way it should (pi_B and reward tilting help). The parameter counts are made up
(1.5B/7B/7B) so that FLOPs have the right proportions. Everything else (results.jsonl, summary.json,
experiment.json, .hydra/, the tracker hook) is what a real run writes.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import hydra
from omegaconf import OmegaConf

from gsi.cluster.preview import check_multirun
from gsi.cluster.sweepjob import sweep_job
from gsi.config.schema import compose_config, register_configs
from gsi.data import Problem
from gsi.engines.table import table_engines
from gsi.run import run

PI_S = (0.4, 0.3, 0.2, 0.1)
PI_B = (0.1, 0.2, 0.3, 0.4)
REWARDS = (0.2, 0.9, 0.5, 0.7)
GOOD_STEPS = {1, 3}
PARAMS = {"small": 1_500_000_000, "big": 7_000_000_000, "reward": 7_000_000_000}

# The sweep synthetic_sweep makes by default: (method overrides) x n x beta.
SWEEP = {
    "methods": [["method=gsi"], ["method=rsd", "method.delta=0.6"], ["method=bon", "method.policy=small"],
                ["method=bon", "method.policy=big"]],
    "n": [1, 4],
    "beta": [1.0, 4.0],
}


@dataclass
class _Verdict:
    extracted: str | None
    correct: bool
    rule: str


def synthetic_grade(text: str, reference: str) -> _Verdict:
    steps = [s.strip() for s in text.split("\n\n") if s.strip()]
    kinds = [int(s[1:]) for s in steps if s[:1] == "s" and s[1:].isdigit()]
    ok = bool(kinds) and all(k in GOOD_STEPS for k in kinds[-3:])
    return _Verdict(extracted=steps[-1] if steps else None, correct=ok, rule="synthetic")


class SyntheticGrader:
    """What gsi.run.run grades with here (its `grader`): synthetic_grade, in this process."""

    def grade(self, text: str, reference: str) -> _Verdict:
        return synthetic_grade(text, reference)

    def grade_many(self, pairs) -> list[_Verdict]:
        return [synthetic_grade(text, reference) for text, reference in pairs]


def synthetic_problems(cfg, n_problems: int = 40) -> list[Problem]:
    """The synthetic dataset for `cfg` (gsi.run.run's `problems`): dataset.limit problems (n_problems when the
    config sets no limit); the run selects offset/limit/shard from them as from any dataset."""
    limit = cfg.dataset.get("limit") or n_problems
    return [Problem(id=f"syn-{i}", problem=f"problem {i}", reference="all good") for i in range(limit)]


def compose(overrides: list[str]):
    """The composed config, as `run.py` would build it (with the hydra node resolved away)."""
    return compose_config("model=tiny", "hardware=cpu", *overrides)


def table_engines_with_params():
    engines = table_engines(PI_S, PI_B, REWARDS)
    engines.params = dict(PARAMS)
    return engines


def synthetic_run(overrides: list[str], out: Path, *, n_problems: int = 40) -> dict:
    """One run into `out` (summary returned). Overrides as on the command line, e.g. ['method=rsd', 'beta=2']."""
    defaults = [f"dataset.limit={n_problems}", "generation.max_steps=3"]
    if not any(o.startswith("logger=") for o in overrides):
        defaults.append("logger=none")
    cfg = compose([*defaults, *overrides])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # What Hydra writes beside a job: the report reads the config and the overrides from there.
    hydra_dir = out / ".hydra"
    hydra_dir.mkdir(exist_ok=True)
    OmegaConf.save(cfg, hydra_dir / "config.yaml")
    OmegaConf.save(OmegaConf.create(list(overrides)), hydra_dir / "overrides.yaml")
    return run(cfg, out=out, engines=table_engines_with_params(), problems=synthetic_problems(cfg, n_problems),
               grader=SyntheticGrader())


def synthetic_sweep(root: Path, *, n_problems: int = 40, sweep: dict = SWEEP) -> list[Path]:
    """Run folders `<root>/<num>_<overrides>` the way a Hydra multirun lays them out."""
    dirs = []
    grid = itertools.product(sweep["methods"], sweep["n"], sweep["beta"], sweep.get("seed", [None]))
    for num, (method, n, beta, seed) in enumerate(grid):
        overrides = [*method, f"method.n={n}", f"beta={beta}"] + ([f"seed={seed}"] if seed is not None else [])
        out = Path(root) / f"{num}_{','.join(overrides)}"
        synthetic_run(overrides, out, n_problems=n_problems)
        dirs.append(out)
    return dirs


def _hydra_entry() -> None:
    """`python -m experiments.synthetic [overrides]`: run.py with the table engines (all of Hydra: -m, sweeps,
    +experiment presets, .hydra/ folders, logger=wandb)."""
    register_configs()

    @hydra.main(version_base="1.3", config_path="../conf", config_name="config")
    def main(cfg) -> dict:
        check_multirun()
        with sweep_job():
            return run(cfg, engines=table_engines_with_params(), problems=synthetic_problems(cfg),
                       grader=SyntheticGrader())

    main()


if __name__ == "__main__":
    _hydra_entry()
