"""What a sweep would run, resolved, before anything is submitted; and the check that keeps a sweep preset from
silently running one job.

    python -m gsi.cluster.preview +experiment=paper_gsi hydra/launcher=submitit_slurm   # the 36 jobs and their SLURM request
    python -m gsi.cluster.preview +experiment=paper_gsi dataset=math500 beta=10,20      # command-line values win, as with -m
    python -m gsi.cluster.preview +experiment=tiny_sweep --job 3                        # job 3's whole config, resolved
    python -m gsi.cluster.preview +experiment=paper_rsd --json                          # machine-readable

The jobs are expanded exactly as Hydra's basic sweeper does under `-m` (the preset's `hydra.sweeper.params`, then
the command line's overrides, a later value for a key replacing an earlier one, the cartesian product in that
order); each job's config is composed and resolved as run.py would (the launcher's values included: GPUs, CPUs,
memory, time limit, partition). Nothing is started, written or submitted. Without -m Hydra itself offers
`python run.py <overrides> --cfg all --resolve -p hydra.launcher` (one job only; `--cfg hydra` leaves the
interpolations unresolved).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.table import Table

from gsi.config.schema import register_configs
from gsi.reporting.report import console
from gsi.reporting.thresholds import threshold_of

from gsi.config.access import get as _get

# Launcher keys shown per job (the rest are printed once with --job).
LAUNCHER_KEYS = ("partition", "account", "qos", "gpus_per_node", "cpus_per_task", "mem_gb", "timeout_min",
                 "array_parallelism", "max_num_timeout", "submitit_folder")


def _parse(overrides):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides(list(overrides))


def sweep_params(overrides) -> dict:
    """The preset's `hydra.sweeper.params` (composed with the command line's fixed values)."""
    from omegaconf import OmegaConf

    fixed = [o.input_line for o in _parse(overrides) if not o.is_sweep_override()]
    return OmegaConf.to_container(_compose_with_hydra(fixed).hydra.sweeper.params, resolve=False) or {}


def _compose_with_hydra(overrides):
    """compose_config with the `hydra` node kept (the sweeper's params, the launcher)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_configs()
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    conf = Path(__file__).resolve().parents[2] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


def expand(overrides) -> list[list[str]]:
    """Each job's overrides, in the order `python run.py -m <overrides>` would launch them."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    params = [f"{k}={v}" for k, v in sweep_params(overrides).items()]
    (jobs,) = BasicSweeper.split_arguments(_parse(params + list(overrides)), None)
    return jobs


def job_config(overrides, *, full: bool = False) -> dict:
    """One job, resolved: its run config (`full`: everything; else the settings a sweep varies) and launcher."""
    from omegaconf import OmegaConf

    cfg = _compose_with_hydra(overrides)
    launcher = {}
    node = cfg.hydra.get("launcher")
    if node is not None:
        for key in node:
            if key == "_target_" or (not full and key not in LAUNCHER_KEYS):
                continue
            try:
                launcher[key] = OmegaConf.to_container(node, resolve=True)[key] if full else _get(node, key)
            except Exception as e:  # noqa: BLE001 - e.g. ${hydra:...} outside a Hydra run
                launcher[key] = f"<unresolved: {type(e).__name__}>"
        target = node.get("_target_", "")
        launcher["launcher"] = str(target).rsplit(".", 1)[-1] if target else "basic"
    run = {k: v for k, v in cfg.items() if k != "hydra"}
    run = OmegaConf.to_container(OmegaConf.create(run), resolve=True)
    if not full:
        m = run["method"]
        thr = threshold_of(m, run["beta"])  # a score threshold s shown as u = s/β: one scale for GSI's u
        run = {"method": m["name"], "n": m.get("n"), "beta": run["beta"], "threshold": thr.text if thr else "-",
               "dataset": run["dataset"]["name"], "limit": run["dataset"].get("limit"),
               "model": run["model"]["name"], "hardware": run["hardware"]["name"], "seed": run["seed"],
               "shard": run.get("shard")}
    return {"overrides": list(overrides), "config": run, "launcher": launcher,
            "sweep_dir": _get(cfg, "hydra.sweep.dir")}


def preview(overrides, *, full: bool = False) -> dict:
    jobs = expand(overrides)
    params = sweep_params(overrides)
    return {"overrides": list(overrides), "sweeper_params": params, "n_jobs": len(jobs),
            "jobs": [job_config(j, full=full) for j in jobs]}


def print_preview(p: dict, file=None) -> None:
    out = console(file)
    jobs = p["jobs"]
    swept = [k for k, v in p["sweeper_params"].items()] + [o.split("=", 1)[0] for o in p["overrides"]
                                                           if "," in o.split("=", 1)[-1]]
    out.print(f"{p['n_jobs']} job(s) from `{' '.join(p['overrides']) or '(defaults)'}`"
              + (f"; swept: {', '.join(dict.fromkeys(swept))}" if swept else ""))
    if jobs:
        out.print(f"sweep dir: {jobs[0]['sweep_dir']} (under -m; one subfolder per job)")
        launcher = jobs[0]["launcher"]
        out.print(f"launcher: {launcher.get('launcher', 'basic')}"
                  + ("" if launcher.get("launcher") in (None, "basic", "BasicLauncher") else
                     " (run.py -m submits one SLURM array job; the columns below are each job's request)"))
    t = Table(show_lines=False)
    cols = ["#", "swept values", "method", "n", "β", "threshold", "dataset", "limit", "model", "hardware", "seed"]
    slurm = [k for k in ("gpus_per_node", "cpus_per_task", "mem_gb", "timeout_min", "partition")
             if any(k in j["launcher"] for j in jobs)]
    for c in cols + slurm:
        t.add_column(c, no_wrap=True)
    keys = set(dict.fromkeys(swept))
    for i, j in enumerate(jobs):
        c = j["config"]
        varying = [o for o in j["overrides"] if o.split("=", 1)[0] in keys] or j["overrides"]
        t.add_row(str(i), " ".join(varying), c["method"], str(c["n"]), f"{c['beta']:g}", c["threshold"],
                  c["dataset"], str(c["limit"]), c["model"], c["hardware"], str(c["seed"]),
                  *[str(j["launcher"].get(k)) for k in slurm])
    out.print(t)


def check_multirun(cfg=None) -> None:
    """Called by run.py: a preset that sweeps (`hydra.sweeper.params`) run without -m would run just its first
    values, silently. Refuse with the fix, unless every swept key is given on the command line (then the user
    asked for exactly one job)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
    except Exception:  # noqa: BLE001 - not under Hydra
        return
    if hc.mode == RunMode.MULTIRUN:
        return
    params = dict(hc.sweeper.get("params") or {})
    if not params:
        return
    given = {o.split("=", 1)[0].lstrip("+~") for o in hc.overrides.task}
    missing = [k for k in params if k not in given]
    if not missing:
        return
    preset = hc.runtime.choices.get("experiment") or "this preset"
    args = " ".join(hc.overrides.task)
    sizes = " x ".join(f"{len(str(params[k]).split(','))} {k}" for k in params)
    raise SystemExit(
        f"+experiment={preset} is a sweep ({sizes}): run it with -m (`python run.py -m {args}`), preview its jobs "
        f"with `python -m gsi.cluster.preview {args}`, or give {', '.join(f'{k}=...' for k in missing)} to run one job.")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m gsi.cluster.preview", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("overrides", nargs="*", help="run.py's overrides (sweeps as a,b,c; +experiment=...)")
    ap.add_argument("--job", type=int, help="print this job's whole config and launcher, resolved, as YAML")
    ap.add_argument("--json", action="store_true", help="print the preview as JSON")
    args = ap.parse_args(argv)
    overrides = [o for o in args.overrides if o not in ("-m", "--multirun")]
    if args.job is not None:
        jobs = expand(overrides)
        if not 0 <= args.job < len(jobs):
            ap.error(f"--job {args.job}: the sweep has {len(jobs)} job(s), 0..{len(jobs) - 1}")
        from omegaconf import OmegaConf

        j = job_config(jobs[args.job], full=True)
        print(f"# job {args.job}: {' '.join(j['overrides'])}")
        print(OmegaConf.to_yaml({"config": j["config"], "hydra.launcher": j["launcher"]}))
        return
    p = preview(overrides)
    if args.json:
        json.dump(p, sys.stdout, indent=1, default=str)
        print()
    else:
        print_preview(p)


if __name__ == "__main__":
    main()
