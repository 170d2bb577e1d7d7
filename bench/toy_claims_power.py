"""Power of the toy claims (tests/test_toy_claims.py) against the number of problems: how many held-out problems
each claim's runs need. From runs kept at 200 problems,

    GSI_TOY_CLAIM_PROBLEMS=200 GSI_TOY_CLAIM_DIR=/tmp/toy200 python -m pytest -q tests/test_toy_claims.py
    python bench/toy_claims_power.py /tmp/toy200 [--sizes 20,40,60,80,100,150,200] [--resamples 200]

prints, per claim and N, the share of resamples (N problems drawn with replacement from the 200, the same draw
for every run of the claim) in which the claim's assertion holds (the test file's own rules, at its ALPHA), and
whether it holds on the first N problems (what a run at dataset.limit=N sees, up to batch effects). The test
file's PROBLEMS gives each run the smallest N at which every claim reading it has power >= 0.99, or 200 where
none below does.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def load_claims():
    spec = importlib.util.spec_from_file_location("toy_claims", ROOT / "tests" / "test_toy_claims.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, help="GSI_TOY_CLAIM_DIR of a 200-problem run of tests/test_toy_claims.py")
    ap.add_argument("--sizes", default="20,40,60,80,100,150,200")
    ap.add_argument("--resamples", type=int, default=200)
    ap.add_argument("--pool-resamples", type=int, default=40, help="for the pool curve (each resample ~1 s)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t = load_claims()
    from gsi.config.schema import compose_config

    seed = int(compose_config(*t.BASE).seed)

    def recs(name: str) -> dict:
        path = args.runs / name / "results.jsonl"
        if not path.exists():
            raise SystemExit(f"{path}: missing (run the claims with GSI_TOY_CLAIM_DIR={args.runs})")
        return {r["id"]: r for r in map(json.loads, path.read_text().splitlines())}

    # claim -> (runs it reads, rule on their records and a list of problem ids)
    claims = {
        "soft BoN pi_S >= greedy pi_S + 15": (("bon_small", "greedy_small"),
                                              lambda a, b, ids: t.more_accurate(a, b, 0.15, ids)),
        "GSI > RSD": (("gsi", "rsd"), lambda a, b, ids: t.more_accurate(a, b, 0.0, ids)),
        "GSI >= soft BoN pi_S + 10": (("gsi", "bon_small"), lambda a, b, ids: t.more_accurate(a, b, 0.10, ids)),
        "GSI ~ soft BoN pi_B, <= 40% pi_B tokens": (("gsi", "bon_big"), t.fewer_big_tokens),
        "DVTS > greedy pi_S": (("dvts", "greedy_small"), lambda a, b, ids: t.more_accurate(a, b, 0.0, ids)),
        "beam > greedy pi_S": (("beam", "greedy_small"), lambda a, b, ids: t.more_accurate(a, b, 0.0, ids)),
        "weighted vote rises with n": (("pool",), lambda a, ids: t.rises_with_n(a, "weighted-last", seed, ids)),
        **{f"{m} acceptance falls ({k} {lo} -> {hi})": ((f"{m}_{k}_{lo}", f"{m}_{k}_{hi}"), t.acceptance_falls)
           for m, k, lo, hi in (getattr(p, "values", p) for p in t.THRESHOLDS)},  # a pytest.param's values
    }
    sizes = [int(x) for x in args.sizes.split(",")]
    print(f"power = share of {args.resamples} resamples ({args.pool_resamples} for the pool) in which the claim holds; "
          "(y/n) = holds on the first N problems")
    print(f"{'claim':42} {'runs':28} " + " ".join(f"{'N=' + str(n):>12}" for n in sizes))
    for name, (run_names, rule) in claims.items():
        data = [recs(r) for r in run_names]
        ids = sorted(set.intersection(*(set(d) for d in data)), key=lambda i: data[0][i]["index"])
        rng = np.random.default_rng(args.seed)
        cells, k = [], args.pool_resamples if run_names == ("pool",) else args.resamples
        for n in sizes:
            if n > len(ids):
                cells.append(f"{'-':>12}")
                continue
            # a resample may hold a problem twice: the rules take a list of ids, so duplicates count twice
            power = np.mean([rule(*data, list(rng.choice(ids, size=n, replace=True)))[0]
                             for _ in range(k)])
            prefix = rule(*data, ids[:n])[0]
            cells.append(f"{power:>6.3f} ({'y' if prefix else 'n'})")
        print(f"{name:42} {'+'.join(run_names):28} " + " ".join(cells))
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
