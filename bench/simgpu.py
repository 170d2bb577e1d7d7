"""Simulated-GPU benchmark: the real methods and runtime on exact-table engines whose work takes VIRTUAL time
from a model of vLLM on one H100 per role. Lock-step, async with whole calls, async with continuous batching (and
cohorts, the former overlap) side by side.

    PYTHONPATH=. python bench/simgpu.py                  # 500 problems, n = 16, GSI / RSD / soft BoN pi_B, 64 and 128
    PYTHONPATH=. python bench/simgpu.py --problems 100 --methods gsi --batch-size 64 --modes async cohorts --cohorts 2 3

Nothing sleeps and no thread runs: the runtime's driver (gsi.runtime.scheduler.step_all) is given a
VirtualExecutor. Each role is an IterationEngine (bench/simengine.py: vLLM's scheduler iteration by iteration,
max_num_seqs and KV-cache bounds, the cost model and its sources); a call's choices are made by the table engines
on submit and its requests enter its role's engine at the virtual now; the executor runs the roles' iterations in
time order and hands back what ends. Rows:
- `lockstep`, `async`, `cohorts` (whole calls, as in-process vLLM's LLM.generate serves them): one call per role at
  a time, handed back when its last request ends; sequences of one call share the decode batch.
- `continuous` (the async policy on engines that batch across calls, as vLLM's AsyncLLM and its HTTP server do):
  the driver submits a role's requests as they arrive, they join its running decode at the next iteration, and
  each request comes back when its own samples end.
Python time between calls counts as zero. The methods and the driver are the real ones. The prefix cache is per
role and unbounded (contexts already seen are not prefilled again): our engines read the prefix cache for
sampling, teacher forcing and the PRM (vllm-facts §3).

The workload: step types with fixed lengths in tokens (STEP_TOKENS) drawn from pi_S / pi_B tables; the PRM's
reward of a step type is shifted per problem (harder problems get lower rewards), so acceptance varies by problem.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import sys
import time
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gsi.engines.base import Engines  # noqa: E402
from gsi.engines.table import TableGenerator, TableReward  # noqa: E402
from gsi.methods import build_method  # noqa: E402
from gsi.methods.base import StepContext  # noqa: E402
from gsi.reporting.utilisation import utilisation  # noqa: E402
from gsi.roles import ROLES  # noqa: E402
from gsi.runtime.calls import run_batch  # noqa: E402
from gsi.runtime.scheduler import Executor, step_all  # noqa: E402
from gsi.runtime.state import ProblemState  # noqa: E402

from bench.simengine import COST_MODELS, IterationEngine  # noqa: E402


# ---------------------------------------------------------------------------------------------------------------
# The virtual clock: an executor for the runtime's driver
# ---------------------------------------------------------------------------------------------------------------
class Meter:
    """Where the simulated engines leave the work of the call they just served: per request, its sequences as
    (uncached prompt tokens, tokens to produce, prompt tokens) (read by VirtualExecutor)."""

    def __init__(self):
        self.work: list = []

    def charge(self, role: str, work: list) -> None:
        self.work.extend(work)

    def take(self) -> list:
        work, self.work = self.work, []
        return work


class VirtualExecutor(Executor):
    """The driver's executor on virtual time (see the module docstring): each role is an IterationEngine
    (bench/simengine.py). A call's choices are made at once, on submit (the table engines), and its requests are
    added to its role's engine at the virtual `now`; wait_any runs the roles' iterations in time order until one
    ends some requests, and moves `now` there. `continuous`: a role takes calls while it runs others and each
    request is handed back when it ends (continuous batching across calls: vLLM's AsyncLLM, the HTTP server);
    otherwise one call per role at a time, handed back when its last request ends (LLM.generate)."""

    def __init__(self, engines: Engines, meter: Meter, roles=ROLES, continuous: bool = False):
        self.engines, self.meter, self.continuous = engines, meter, continuous
        self.now = 0.0
        self.sim = {r: IterationEngine(COST_MODELS[r]) for r in roles}
        self.ready: deque = deque()  # (ticket, positions, results, exception) to hand back
        self.calls_of: dict[int, list] = {}  # ticket -> [results, positions ended, requests left]
        self.tickets = itertools.count()
        self.calls = {r: 0 for r in roles}
        self.requests = {r: 0 for r in roles}

    def concurrent(self, role: str) -> bool:
        return self.continuous

    def submit(self, role: str, kind: str, calls) -> int:
        ticket = next(self.tickets)
        self.meter.take()
        try:
            results = run_batch(self.engines, role, kind, calls)
        except Exception as exc:  # noqa: BLE001 - handed to the driver through wait_any, as the thread executor does
            self.ready.append((ticket, None, None, exc))
            return ticket
        work = self.meter.take()
        assert len(work) == len(calls), (role, kind, len(work), len(calls))
        self.calls_of[ticket] = [results, [], len(calls)]
        for k, seqs in enumerate(work):
            self.sim[role].add(self.now, (ticket, k), seqs, call_overhead=k == 0)
        self.calls[role] += 1
        self.requests[role] += len(calls)
        return ticket

    def wait_any(self):
        while not self.ready:
            ends = [(end, r) for r, e in self.sim.items() if (end := e.peek()) is not None]
            if not ends:
                raise RuntimeError("the driver waits, but no call is in flight")
            end, role = min(ends)
            ended = self.sim[role].commit()
            self.now = end
            for ticket, k in ended:
                call = self.calls_of[ticket]
                call[1].append(k)
                call[2] -= 1
                if self.continuous:
                    continue
                if call[2] == 0:
                    self.ready.append((ticket, None, call[0], None))
                    del self.calls_of[ticket]
            if self.continuous:  # each call's requests that ended at this iteration, in one answer
                for ticket in dict.fromkeys(t for t, _ in ended):
                    results, done, left = self.calls_of[ticket]
                    self.ready.append((ticket, done, [results[k] for k in done], None))
                    if left == 0:
                        del self.calls_of[ticket]
                    else:
                        self.calls_of[ticket][1] = []
        return self.ready.popleft()

    @property
    def busy(self) -> dict[str, float]:
        return {r: e.busy for r, e in self.sim.items()}


# ---------------------------------------------------------------------------------------------------------------
# Simulated engines: the table engines' choices, a cost model's time
# ---------------------------------------------------------------------------------------------------------------
PROMPT_TOKENS = 150
# step types: 0 = the final step (EOS, carries \boxed{}), then ordinary steps of growing length; 512 = the cap
STEP_TOKENS = [60, 25, 50, 90, 160, 300, 512]
TEXTS = ["so the answer is \\boxed{1}\n\n"] + [f"step of {n} tokens\n\n" for n in STEP_TOKENS[1:]]
PI_S = [0.05, 0.25, 0.3, 0.2, 0.12, 0.06, 0.02]
PI_B = [0.06, 0.2, 0.32, 0.22, 0.13, 0.05, 0.02]
REWARD = [0.8, 0.75, 0.8, 0.7, 0.65, 0.55, 0.4]


def sim_tokens(context) -> int:
    """A context of table tokens: the problem's prompt token, then one token per step type."""
    return PROMPT_TOKENS + sum(STEP_TOKENS[k] for k in context[1:])


class PrefixCache:
    def __init__(self):
        self.seen: set[tuple] = set()

    def cached(self, key: tuple, tokens_of) -> int:
        for i in range(len(key), 0, -1):
            if key[:i] in self.seen:
                return tokens_of(key[:i])
        return 0

    def add(self, key: tuple) -> None:
        self.seen.add(key)


class SimGenerator(TableGenerator):
    def __init__(self, role, probs, meter, **kw):
        super().__init__(role, probs, **kw)
        self.meter, self.cache = meter, PrefixCache()

    def generate(self, requests, *, greedy=False):
        out = super().generate(requests, greedy=greedy)
        work = []
        for req, steps in zip(requests, out):
            key = tuple(req.context)
            prompt = sim_tokens(key)
            uncached = prompt - self.cache.cached(key, sim_tokens)
            self.cache.add(key)
            seqs = []
            for i, st in enumerate(steps):  # the n samples share the prompt's blocks: the first one computes them
                seqs.append((uncached if i == 0 else 0, min(STEP_TOKENS[st.token_ids[0]], 512), prompt))
                self.cache.add(key + tuple(st.token_ids))
            work.append(seqs)
        self.meter.charge(self.role, work)
        return out

    def score(self, contexts, continuations):
        out = super().score(contexts, continuations)
        work = []
        for ctx, cont in zip(contexts, continuations):
            key = tuple(ctx) + tuple(cont)
            work.append([(sim_tokens(key) - self.cache.cached(key, sim_tokens), 1, sim_tokens(key))])
            self.cache.add(key)
        self.meter.charge(self.role, work)
        return out


class SimReward(TableReward):
    """The table reward shifted per problem (a hash of its text): hard problems get lower rewards."""

    def __init__(self, rewards, meter, **kw):
        super().__init__(rewards, **kw)
        self.meter, self.cache = meter, PrefixCache()
        self.kind = {t.strip(): k for k, t in enumerate(kw.get("texts") or TEXTS)}

    @staticmethod
    def shift(problem: str) -> float:
        h = int(hashlib.sha256(problem.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        return -0.6 * h + 0.1  # in [-0.5, 0.1]

    def reward(self, requests):
        base = super().reward(requests)
        out = [float(min(1.0, max(0.0, b + self.shift(r.problem)))) for b, r in zip(base, requests)]
        work = []
        for r in requests:
            kinds = tuple(self.kind[s.strip()] for s in r.steps)
            key = (r.problem, *kinds)
            tokens = lambda k: PROMPT_TOKENS + sum(STEP_TOKENS[x] for x in k[1:])  # noqa: E731
            work.append([(tokens(key) - self.cache.cached(key, tokens), 1, tokens(key))])
            self.cache.add(key)
        self.meter.charge("reward", work)
        return out


def sim_engines(meter: Meter) -> Engines:
    return Engines(small=SimGenerator("small", PI_S, meter, eos_step=0, texts=TEXTS),
                   big=SimGenerator("big", PI_B, meter, eos_step=0, texts=TEXTS),
                   reward=SimReward(REWARD, meter, texts=TEXTS))


# ---------------------------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------------------------
METHODS = {  # the papers' settings (conf/experiment/paper_*.yaml) at n = 16, beta = 20
    "gsi": ["method=gsi", "method.threshold=0.5", "method.threshold_on=tilted"],
    "rsd": ["method=rsd", "method.delta=0.7", "method.n_big=16"],
    "bon_big": ["method=bon", "method.policy=big", "method.selection=soft", "method.level=step"],
}


MODES = ("lockstep", "cohorts", "async", "continuous")


def run_one(method: str, *, problems: int, n: int, batch_size: int, mode: str, cohorts: int = 1,
            max_steps: int = 45, plain_cfg: bool = True, shared_device: bool = False) -> dict:
    """One run of the step loop. batch_size is the problems in flight: lock-step's round, the cohorts' total
    (`cohorts` of ceil(batch_size / cohorts) problems each), or async's max_in_flight. `continuous` is the async
    runtime on engines that batch continuously across calls. `shared_device`: the three roles share one device
    (placement gpu1, or the CPU), so the runtime runs one engine call at a time across them (hardware.device_calls
    = 1); the roles' cost models stay their own."""
    from omegaconf import OmegaConf

    from gsi.config.schema import compose_config  # Hydra's compose API

    if mode not in MODES:
        raise ValueError(f"mode={mode!r}: expected one of {', '.join(MODES)}")
    cfg = compose_config("model=tiny", "hardware=cpu", "beta=20", f"method.n={n}", *METHODS[method])
    OmegaConf.resolve(cfg)
    # the method's settings as their dataclass: a method reads them per candidate, and a DictConfig read (with
    # `${beta}` parsed again at every read) is most of the simulation's CPU time
    method_cfg = OmegaConf.to_object(cfg.method) if plain_cfg else cfg.method
    if mode == "cohorts":  # the scheduler's batch_size is per cohort
        per_call = math.ceil(batch_size / cohorts)
        sched = dict(batch_size=per_call, max_in_flight=per_call * cohorts)
    else:
        cohorts = 1
        sched = dict(batch_size=batch_size, max_in_flight=batch_size)
    meter = Meter()
    engines = sim_engines(meter)
    if shared_device:
        engines.shared_devices = dict.fromkeys(ROLES, "gpu0")
    executor = VirtualExecutor(engines, meter, continuous=mode == "continuous")
    ctx = StepContext(seed=0, max_step_tokens=512, max_steps=max_steps, window=100_000)  # stops: EOS or max_steps
    method_obj = build_method(method_cfg, engines, ctx)
    states = [ProblemState(index=i, id=f"p{i}", problem=f"problem {i}", reference="1", prompt_ids=[10_000 + i],
                           context=[10_000 + i]) for i in range(problems)]
    finished: list[float] = []  # virtual time of each problem's end
    t0 = time.perf_counter()
    step_all(states, method_obj, ctx, mode="async" if mode == "continuous" else mode, executor=executor,
             on_finish=lambda s, t: finished.append(executor.now), **sched)
    real = time.perf_counter() - t0
    wall = executor.now
    use = utilisation({r: {"busy_s": b} for r, b in executor.busy.items()}, wall)
    # The drain: from the first slot left empty (the queue ran dry) to the end, fewer problems are in flight and
    # the roles wait on each other's last steps. Up to then ("steady"), wall / busiest shows the policy alone.
    in_flight = sched["max_in_flight"]
    drain_start = sorted(finished)[problems - in_flight] if problems > in_flight else 0.0
    busiest = use["busiest_role"]
    steady_busy = sum(max(0.0, min(e, drain_start) - s) for s, e in executor.sim[busiest].intervals)
    return {"method": method, "mode": mode, "cohorts": cohorts, "shared_device": shared_device, "problems": problems, "n": n,
            "batch_size": batch_size, "wall_s": wall, "busy_s": executor.busy, "busy_fraction": use["busy_fraction"],
            "wall_over_busiest": use["wall_over_busiest"], "busiest": use["busiest_role"],
            "wall_over_sum": use["wall_over_sum"], "engine_calls": executor.calls, "drain_s": wall - drain_start,
            "steady_wall_over_busiest": drain_start / steady_busy if steady_busy > 0 else None,
            "requests_per_call": {r: executor.requests[r] / c for r, c in executor.calls.items() if c},
            "real_s": real, "steps": sum(len(s.steps) for s in states),
            "accepted": sum(bool(st.accepted) for s in states for st in s.steps),
            "fingerprint": hashlib.sha256(json.dumps([[st.token_ids for st in s.steps] for s in states])
                                          .encode()).hexdigest()[:12]}


def variants(method: str, args) -> list[tuple]:
    """(mode, cohorts, problems in flight) of the rows of one method: lock-step, async and continuous first (the
    issue's targets), then today's overlap (k cohorts sharing the same problems in flight: smaller calls)."""
    out = []
    for b in args.batch_size:
        out.append(("lockstep", 1, b))
        out += [(m, 1, b) for m in ("async", "continuous") if m in args.modes]
    if "cohorts" in args.modes:
        out += [("cohorts", k, b) for b in args.batch_size for k in args.cohorts]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problems", type=int, default=500)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--batch-size", type=int, nargs="+", default=[64, 128], help="problems in flight, one row each")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--modes", nargs="+", default=["async", "continuous"], choices=["async", "continuous", "cohorts"],
                    help="rows besides lock-step (the reference, always run)")
    ap.add_argument("--cohorts", nargs="+", type=int, default=[2])
    ap.add_argument("--max-steps", type=int, default=45)
    ap.add_argument("--shared-device", action="store_true",
                    help="the three roles on one device: one engine call at a time across them (every row)")
    ap.add_argument("--json")
    args = ap.parse_args()

    rows = []
    for method in args.methods:
        for mode, k, batch in variants(method, args):
            row = run_one(method, problems=args.problems, n=args.n, batch_size=batch, mode=mode, cohorts=k,
                          max_steps=args.max_steps, shared_device=args.shared_device)
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k not in ("busy_s",)}), file=sys.stderr, flush=True)
            if args.json:  # after every row: a long run that is stopped keeps what it measured
                Path(args.json).write_text(json.dumps(rows, indent=1))
    prints = {m: {r["fingerprint"] for r in rows if r["method"] == m} for m in args.methods}
    assert all(len(v) == 1 for v in prints.values()), f"schedulers chose different steps: {prints}"
    print(markdown(rows))


def lockstep_wall(rows, r) -> float | None:
    for x in rows:
        if (x["method"], x["mode"], x["batch_size"]) == (r["method"], "lockstep", r["batch_size"]):
            return x["wall_s"]
    return None


def markdown(rows) -> str:
    """The issue's targets for the async rows: wall <= 1.05 x the busiest role's busy time and <= 0.80 x lock-step's
    wall at the same problems in flight."""
    out = ["| method | scheduler | problems in flight | wall (virtual) | small busy | big busy | reward busy | "
           "wall / busiest | wall / sum of roles | wall / lock-step's | async targets (≤ 1.05, ≤ 0.80) |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        sched = {"cohorts": f"cohorts (the former overlap), {r['cohorts']} cohorts", "async": "async, whole calls",
                 "continuous": "async, continuous batching", "lockstep": "lock-step"}[r["mode"]]
        if r.get("shared_device"):
            sched += ", one shared device"
        f = r["busy_fraction"]
        ref = lockstep_wall(rows, r)
        vs = r["wall_s"] / ref if ref else None
        target = ""
        if r["mode"] in ("async", "continuous"):
            target = ("met" if r["wall_over_busiest"] <= 1.05 and vs is not None and vs <= 0.80 else "not met")
        out.append(f"| {r['method']} | {sched} | {r['batch_size']} | {r['wall_s']:.0f} s | {100 * f['small']:.0f}% | "
                   f"{100 * f['big']:.0f}% | {100 * f['reward']:.0f}% | {r['wall_over_busiest']:.2f} "
                   f"({r['busiest']}) | {r['wall_over_sum']:.2f} | {'' if vs is None else f'{vs:.2f}'} | {target} |")
    return "\n".join(out)


if __name__ == "__main__":
    main()
