"""A real `gsi.run.run` on exact table engines (no vLLM, starts in ~2 s), for the fault tests in a subprocess.

    python tests/fault_driver.py OUT [--problems N] [--delay S] [--fail-role ROLE --fail-after K] [KEY=VALUE ...]

`--delay` sleeps S seconds in every engine call, so that a signal or a kill lands mid-run; `--fail-role` makes
that role's engine raise on its K-th call (an engine that dies mid-run). The config is the run's own (model=tiny,
composed like `run.py`, plus any KEY=VALUE overrides), so run() does everything it does for a real run: validation,
the folder lock, resume, grading, results, summary.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GSI_DATA_DIR", str(ROOT.parent / "shared" / "data"))

# pi_S, pi_B and r over 4 step types; step 0 ends the response (EOS), step 3 carries an answer.
PI_S, PI_B, R = [0.1, 0.45, 0.35, 0.1], [0.15, 0.3, 0.3, 0.25], [0.45, 0.5, 0.48, 0.42]
TEXTS = ["done\n\n", "step one\n\n", "step two\n\n", "so \\boxed{1}\n\n"]


def overrides(problems: int) -> list[str]:
    return ["model=tiny", "hardware=cpu", "dataset=math500", f"dataset.limit={problems}", "method=gsi",
            "method.n=4", "method.threshold=0.47", "generation.max_steps=8", "batch_size=4"]


def compose(problems: int, extra=()):
    from gsi.config.schema import compose_config

    return compose_config(*overrides(problems), *extra)


class EngineDied(RuntimeError):
    pass


class _Faults:
    """Sleeps `delay` in every call; raises on call number `fail_after` (0: never)."""

    delay, fail_after = 0.0, 0

    def _fault(self):
        if self.delay:
            time.sleep(self.delay)
        if self.fail_after and self.stats.calls + 1 >= self.fail_after:
            raise EngineDied(f"engine process died (simulated, call {self.stats.calls + 1})")


def make_engines(delay: float = 0.0, fail_role: str | None = None, fail_after: int = 0):
    from gsi.engines.base import Engines
    from gsi.engines.table import TableGenerator, TableReward

    class Generator(_Faults, TableGenerator):
        def generate(self, requests, **kw):
            self._fault()
            return super().generate(requests, **kw)

        def score(self, contexts, continuations):
            self._fault()
            return super().score(contexts, continuations)

    class Reward(_Faults, TableReward):
        def reward(self, requests):
            self._fault()
            return super().reward(requests)

    engines = Engines(small=Generator("small", PI_S, eos_step=0, texts=TEXTS),
                      big=Generator("big", PI_B, eos_step=0, texts=TEXTS), reward=Reward(R, texts=TEXTS))
    for role, engine in engines.roles().items():
        engine.delay = delay
        engine.fail_after = fail_after if role == fail_role else 0
    return engines


def engines_for(cfg, delay: float = 0.0):
    """make_engines(delay) with the parameter counts of cfg's models, as gsi.engines.registry.build_engines gives
    them (so a summary's FLOPs are those of a real run, and a resume that starts no engine agrees with them)."""
    from gsi.engines.plan import model_params, validate

    engines = make_engines(delay)
    engines.params = model_params(cfg, validate(cfg, check_devices=False))
    return engines


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--problems", type=int, default=12)
    ap.add_argument("--delay", type=float, default=0.0)
    ap.add_argument("--fail-role")
    ap.add_argument("--fail-after", type=int, default=0)
    ap.add_argument("extra", nargs="*", help="more config overrides (KEY=VALUE)")
    args = ap.parse_args()

    run_once(Path(args.out), args.problems, args.delay, args.fail_role, args.fail_after, extra=args.extra)


def run_once(out: Path, problems: int, delay: float = 0.0, fail_role: str | None = None, fail_after: int = 0,
             extra=()):
    from gsi.run import run

    return run(compose(problems, extra), out=out, engines=make_engines(delay, fail_role, fail_after))


if __name__ == "__main__":
    main()
