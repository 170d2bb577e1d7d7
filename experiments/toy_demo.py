"""The README's main job: GSI on the toy world next to the baselines, one set of engines, one table.

    python -m experiments.toy_demo                      # 100 held-out arith problems, n = 4
    python -m experiments.toy_demo dataset.limit=200 method.n=8 --out outputs/toy_demo/big

Every configuration is the `+experiment=toy_demo` preset plus its method overrides (and the extra overrides given
here), run through gsi.run.run into its own folder under --out (rerunning the same command resumes); the engines
are started once and shared, since the model, hardware and generation settings are the same for all six.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from gsi.config.schema import compose_config
from gsi.config.validate import validate
from gsi.engines.registry import build_engines
from gsi.reporting.report import _fmt_flops
from gsi.run import run

CONFIGS = {
    "greedy π_S": ["method=baseline", "method.policy=small", "method.greedy=true", "method.n=1"],
    "greedy π_B": ["method=baseline", "method.policy=big", "method.greedy=true", "method.n=1"],
    "soft BoN π_S": ["method=bon", "method.policy=small", "method.selection=soft"],
    "soft BoN π_B": ["method=bon", "method.policy=big", "method.selection=soft"],
    "RSD": ["method=rsd"],
    "GSI": ["method=gsi"],
}


def slug(name: str) -> str:
    return name.lower().replace(" ", "_").replace("π_", "")


def table(rows: list[tuple[str, dict]]) -> None:
    first = rows[0][1]
    t = Table(title=f"toy world: {first['dataset']}, {first['n_problems']} held-out problems, model={first['model']}")
    for col in ("method", "accuracy", "95% CI", "acceptance", "π_B tokens", "FLOPs", "wall time"):
        t.add_column(col, justify="right" if col != "method" else "left")
    for name, s in rows:
        ci = s.get("accuracy_ci95")
        acc = s["acceptance_rate"]
        t.add_row(name, f"{100 * s['accuracy']:.1f}%", f"{100 * ci[0]:.0f}-{100 * ci[1]:.0f}%" if ci else "-",
                  "-" if acc is None else f"{100 * acc:.1f}%", f"{s['tokens']['big']['generated']:,}",
                  _fmt_flops(s["flops"]["total"]), f"{s['wall_time_s']:.0f} s")
    Console(width=120).print(t)


def main(argv=None) -> list[tuple[str, dict]]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=None, help="folder for the six runs (default outputs/toy_demo/<time>)")
    ap.add_argument("--only", nargs="*", default=None, help=f"a subset of {list(CONFIGS)}")
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides for every configuration")
    args = ap.parse_args(argv)

    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # before build_engines imports vLLM
    out = Path(args.out or f"outputs/toy_demo/{time.strftime('%Y-%m-%d_%H-%M-%S')}")
    names = args.only or list(CONFIGS)
    cfgs = {n: compose_config("+experiment=toy_demo", *CONFIGS[n], *args.overrides) for n in names}
    for cfg in cfgs.values():
        validate(cfg)  # every configuration, before any engine starts
    t0 = time.perf_counter()
    engines = build_engines(cfgs[names[0]])  # model, hardware and generation are shared by all six
    print(f"engines up in {time.perf_counter() - t0:.0f} s")
    rows = []
    try:
        for n in names:
            rows.append((n, run(cfgs[n], out / slug(n), engines=engines)))
    finally:
        engines.close()
    table(rows)
    print(f"runs in {out}; total {time.perf_counter() - t0:.0f} s")
    return rows


if __name__ == "__main__":
    main()
