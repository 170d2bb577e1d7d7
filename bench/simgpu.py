"""Simulated-GPU benchmark: the real methods and runtime on exact-table engines whose calls take VIRTUAL time
from a cost model of vLLM on one H100 per role. Lock-step, cohorts (the former overlap) and async side by side.

    PYTHONPATH=. python bench/simgpu.py                  # 500 problems, n = 16, GSI / RSD / soft BoN pi_B, 64 and 128
    PYTHONPATH=. python bench/simgpu.py --problems 100 --methods gsi --batch-size 64 --cohorts 2 3 --serial

Nothing sleeps and no thread runs: the runtime's driver (gsi.runtime.scheduler.step_all) is given a
VirtualExecutor, which serves each engine call at once on submit and gives it a virtual start (the moment it was
submitted; the driver keeps one call per role in flight) and end (start + the cost model's time); the driver is
handed back the call that ends first. So each role serves its calls one at a time and independent roles overlap
exactly as far as the scheduling policy lets them. Python time between calls counts as zero. The methods and the
driver are the real ones.

Cost model per call on one role (one H100 SXM 80GB per role, bf16; see COST_MODELS for the numbers and sources):
    time = call overhead + per-sequence overhead * sequences
         + uncached prompt tokens / prefill rate
         + sum over decode iterations of (step floor + weight read + tokens in batch * per-token compute
                                          + KV bytes of the batch's contexts / effective bandwidth)
Decode uses continuous batching: up to max_num_seqs sequences at once, a new one joins as one finishes. The
prefix cache is per role and unbounded (contexts already seen are not prefilled again): our engines read the
prefix cache for sampling, teacher forcing and the PRM (vllm-facts §3).

The workload: step types with fixed lengths in tokens (STEP_TOKENS) drawn from pi_S / pi_B tables; the PRM's
reward of a step type is shifted per problem (harder problems get lower rewards), so acceptance varies by problem.
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gsi.engines.base import Engines  # noqa: E402
from gsi.engines.table import TableGenerator, TableReward  # noqa: E402
from gsi.methods import build_method  # noqa: E402
from gsi.methods.base import StepContext  # noqa: E402
from gsi.reporting.utilisation import utilisation  # noqa: E402
from gsi.runtime.calls import run_batch  # noqa: E402
from gsi.runtime.scheduler import Executor, step_all  # noqa: E402
from gsi.runtime.state import ProblemState  # noqa: E402


# ---------------------------------------------------------------------------------------------------------------
# Cost model
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CostModel:
    """One role's engine on one GPU. Times in seconds."""

    name: str
    prefill_tok_s: float  # prompt tokens per second (compute-bound)
    weight_read_s: float  # one decode iteration's weight read (memory-bound floor)
    step_overhead_s: float  # vLLM's per-iteration scheduling/sampling overhead (CUDA graphs on)
    token_s: float  # compute per token in a decode batch
    kv_bytes_per_token: float  # K and V of one context token, all layers
    bandwidth: float  # effective HBM bandwidth, bytes/s
    call_s: float = 0.005  # per engine call (LLM.generate entry, output assembly)
    seq_s: float = 1e-4  # per sequence (input processing, detokenisation, Python objects)
    max_num_seqs: int = 256

    def decode_iteration_s(self, batch: int, context_tokens: float) -> float:
        return (self.step_overhead_s + self.weight_read_s + batch * self.token_s
                + context_tokens * self.kv_bytes_per_token / self.bandwidth)


# H100 SXM 80GB: 3.35 TB/s HBM3 and 989 TFLOP/s dense BF16 (NVIDIA H100 datasheet). Achieved fractions from public
# vLLM figures: single-stream decode of Llama-3.1-8B at ~77% of the HBM roofline (vLLM 0.23, J. Musgrave, "vLLM
# throughput-latency sweep on NVIDIA A100", johnmusgrave.com), ~12,500 output tok/s for Llama-3.1-8B on one H100
# at saturation (morphllm.com/vllm-benchmarks, 2026; this model gives 9.5k at 256 sequences of 1k context),
# TTFT-derived prefill of ~25k tok/s for an 8B-class model (vLLM v0.6.0 blog, 2024-09: 5x lower TPOT, 2.7x
# throughput vs v0.5.3 on Llama 8B / H100). Per-iteration overhead 1.5 ms: vLLM V1 with CUDA graphs (same blog:
# CPU overhead was the bottleneck before 0.6; ~1-2 ms per step after).
BW = 3.35e12 * 0.77
QWEN_7B = CostModel(  # Qwen2.5-Math-7B-Instruct / Qwen2.5-Math-PRM-7B: 7.6B params, 28 layers, 4 KV heads x 128
    name="7B", prefill_tok_s=25_000, weight_read_s=2 * 7.6e9 / BW, step_overhead_s=1.5e-3,
    token_s=2 * 7.6e9 / (989e12 * 0.5), kv_bytes_per_token=28 * 4 * 128 * 2 * 2, bandwidth=BW)
QWEN_1_5B = CostModel(  # Qwen2.5-Math-1.5B-Instruct: 1.54B params, 28 layers, 2 KV heads x 128
    name="1.5B", prefill_tok_s=100_000, weight_read_s=2 * 1.54e9 / BW, step_overhead_s=1.5e-3,
    token_s=2 * 1.54e9 / (989e12 * 0.3), kv_bytes_per_token=28 * 2 * 128 * 2 * 2, bandwidth=BW)
COST_MODELS = {"small": QWEN_1_5B, "big": QWEN_7B, "reward": QWEN_7B}


def generate_s(model: CostModel, prompt_tokens: list[int], cached: list[int], lengths: list[int]) -> float:
    """One generate call: sequence i has a prompt of prompt_tokens[i] (cached[i] of them in the prefix cache) and
    decodes lengths[i] tokens. Continuous batching over max_num_seqs slots."""
    prefill = sum(p - c for p, c in zip(prompt_tokens, cached)) / model.prefill_tok_s
    # slot assignment: sequence j starts at the first free slot's finish iteration
    slots = [0] * min(model.max_num_seqs, len(lengths))
    starts = []
    for L in lengths:
        k = int(np.argmin(slots))
        starts.append(slots[k])
        slots[k] += L
    horizon = max(slots) if slots else 0
    active = np.zeros(horizon + 1)
    ctx = np.zeros(horizon + 1)
    for s, L, p in zip(starts, lengths, prompt_tokens):
        active[s] += 1
        active[s + L] -= 1
        ctx[s] += p + L / 2  # the average context length over its decode
        ctx[s + L] -= p + L / 2
    active, ctx = np.cumsum(active)[:horizon], np.cumsum(ctx)[:horizon]
    decode = float(np.sum(model.step_overhead_s + model.weight_read_s + active * model.token_s
                          + ctx * model.kv_bytes_per_token / model.bandwidth))
    return model.call_s + model.seq_s * len(lengths) + prefill + decode


def prefill_s(model: CostModel, prompt_tokens: list[int], cached: list[int]) -> float:
    """Teacher forcing or PRM scoring: prefill only (one token sampled or none)."""
    return (model.call_s + model.seq_s * len(prompt_tokens)
            + sum(p - c for p, c in zip(prompt_tokens, cached)) / model.prefill_tok_s)


# ---------------------------------------------------------------------------------------------------------------
# The virtual clock: an executor for the runtime's driver
# ---------------------------------------------------------------------------------------------------------------
class Meter:
    """Where the simulated engines put the cost of the call they just served (read by VirtualExecutor)."""

    def __init__(self):
        self.cost = 0.0

    def charge(self, role: str, seconds: float) -> None:
        self.cost += seconds

    def take(self) -> float:
        cost, self.cost = self.cost, 0.0
        return cost


class VirtualExecutor(Executor):
    """The driver's executor on virtual time (see the module docstring). A call runs at once, on submit; it
    starts at the virtual `now` (the driver keeps at most one call per role in flight, so its role is idle) and
    ends `cost` later; wait_any hands back the call that ends first (ties: the one submitted first) and moves
    `now` to its end. `serial`: a call also waits for every other role's call in flight (one engine call at a
    time on the whole machine, the scheduler before roles ran at once)."""

    def __init__(self, engines: Engines, meter: Meter, roles=("small", "big", "reward"), serial: bool = False):
        self.engines, self.meter, self.serial = engines, meter, serial
        self.now = 0.0
        self.free = {r: 0.0 for r in roles}  # when each role's engine is next idle
        self.busy = {r: 0.0 for r in roles}
        self.in_flight: list = []  # heap of (end, submitted, role, results, exception)
        self.submitted = 0
        self.calls = {r: 0 for r in roles}
        self.requests = {r: 0 for r in roles}
        self.intervals = {r: [] for r in roles}  # (start, end) of each call

    def submit(self, role: str, kind: str, calls) -> None:
        self.meter.take()
        try:
            results, exc = run_batch(self.engines, role, kind, calls), None
        except Exception as e:  # noqa: BLE001 - handed to the driver through wait_any, as the thread executor does
            results, exc = None, e
        cost = self.meter.take()
        start = max(self.now, self.free[role], *(self.free.values() if self.serial else ()))
        self.free[role] = start + cost
        self.busy[role] += cost
        self.calls[role] += 1
        self.requests[role] += len(calls)
        self.intervals[role].append((start, start + cost))
        heapq.heappush(self.in_flight, (start + cost, self.submitted, role, results, exc))
        self.submitted += 1

    def wait_any(self):
        end, _, role, results, exc = heapq.heappop(self.in_flight)
        self.now = max(self.now, end)
        return role, results, exc


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
    def __init__(self, role, probs, meter, cost: CostModel, **kw):
        super().__init__(role, probs, **kw)
        self.meter, self.cost, self.cache = meter, cost, PrefixCache()

    def generate(self, requests, *, greedy=False):
        out = super().generate(requests, greedy=greedy)
        prompts, cached, lengths = [], [], []
        for req, steps in zip(requests, out):
            key = tuple(req.context)
            c = self.cache.cached(key, sim_tokens)
            self.cache.add(key)
            for i, st in enumerate(steps):
                prompts.append(sim_tokens(key))
                cached.append(c if i == 0 else sim_tokens(key))  # the n samples share the prompt's blocks
                lengths.append(min(STEP_TOKENS[st.token_ids[0]], 512))
                self.cache.add(key + tuple(st.token_ids))
        self.meter.charge(self.role, generate_s(self.cost, prompts, cached, lengths))
        return out

    def score(self, contexts, continuations):
        out = super().score(contexts, continuations)
        prompts, cached = [], []
        for ctx, cont in zip(contexts, continuations):
            key = tuple(ctx) + tuple(cont)
            cached.append(self.cache.cached(key, sim_tokens))
            prompts.append(sim_tokens(key))
            self.cache.add(key)
        self.meter.charge(self.role, prefill_s(self.cost, prompts, cached))
        return out


class SimReward(TableReward):
    """The table reward shifted per problem (a hash of its text): hard problems get lower rewards."""

    def __init__(self, rewards, meter, cost: CostModel, **kw):
        super().__init__(rewards, **kw)
        self.meter, self.cost, self.cache = meter, cost, PrefixCache()
        self.kind = {t.strip(): k for k, t in enumerate(kw.get("texts") or TEXTS)}

    @staticmethod
    def shift(problem: str) -> float:
        h = int(hashlib.sha256(problem.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        return -0.6 * h + 0.1  # in [-0.5, 0.1]

    def reward(self, requests):
        base = super().reward(requests)
        out = [float(min(1.0, max(0.0, b + self.shift(r.problem)))) for b, r in zip(base, requests)]
        prompts, cached = [], []
        for r in requests:
            kinds = tuple(self.kind[s.strip()] for s in r.steps)
            key = (r.problem, *kinds)
            tokens = lambda k: PROMPT_TOKENS + sum(STEP_TOKENS[x] for x in k[1:])  # noqa: E731
            cached.append(self.cache.cached(key, tokens))
            prompts.append(tokens(key))
            self.cache.add(key)
        self.meter.charge("reward", prefill_s(self.cost, prompts, cached))
        return out


def sim_engines(meter: Meter) -> Engines:
    return Engines(small=SimGenerator("small", PI_S, meter, COST_MODELS["small"], eos_step=0, texts=TEXTS),
                   big=SimGenerator("big", PI_B, meter, COST_MODELS["big"], eos_step=0, texts=TEXTS),
                   reward=SimReward(REWARD, meter, COST_MODELS["reward"], texts=TEXTS))


# ---------------------------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------------------------
METHODS = {  # the papers' settings (conf/experiment/paper_*.yaml) at n = 16, beta = 20
    "gsi": ["method=gsi", "method.threshold=0.5", "method.threshold_on=tilted"],
    "rsd": ["method=rsd", "method.delta=0.7", "method.n_big=16"],
    "bon_big": ["method=bon", "method.policy=big", "method.selection=soft", "method.level=step"],
}


MODES = ("lockstep", "cohorts", "async")


def run_one(method: str, *, problems: int, n: int, batch_size: int, mode: str, cohorts: int = 1,
            serial: bool = False, max_steps: int = 45, plain_cfg: bool = True) -> dict:
    """One run of the step loop. batch_size is the problems in flight: lock-step's round, the cohorts' total
    (`cohorts` of ceil(batch_size / cohorts) problems each), or async's max_in_flight."""
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
    executor = VirtualExecutor(engines, meter, serial=serial)
    ctx = StepContext(seed=0, max_step_tokens=512, max_steps=max_steps, window=100_000)  # stops: EOS or max_steps
    method_obj = build_method(method_cfg, engines, ctx)
    states = [ProblemState(index=i, id=f"p{i}", problem=f"problem {i}", reference="1", prompt_ids=[10_000 + i],
                           context=[10_000 + i]) for i in range(problems)]
    finished: list[float] = []  # virtual time of each problem's end
    t0 = time.perf_counter()
    step_all(states, method_obj, ctx, mode=mode, executor=executor,
             on_finish=lambda s, t: finished.append(executor.now), **sched)
    real = time.perf_counter() - t0
    wall = executor.now
    use = utilisation({r: {"busy_s": b} for r, b in executor.busy.items()}, wall)
    # The drain: from the first slot left empty (the queue ran dry) to the end, fewer problems are in flight and
    # the roles wait on each other's last steps. Up to then ("steady"), wall / busiest shows the policy alone.
    in_flight = sched["max_in_flight"]
    drain_start = sorted(finished)[problems - in_flight] if problems > in_flight else 0.0
    busiest = use["busiest_role"]
    steady_busy = sum(max(0.0, min(e, drain_start) - s) for s, e in executor.intervals[busiest])
    return {"method": method, "mode": mode, "cohorts": cohorts, "serial": serial, "problems": problems, "n": n,
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
    """(mode, cohorts, serial, problems in flight) of the rows of one method: lock-step and async first (the
    issue's targets), then today's overlap (k cohorts sharing the same problems in flight: smaller calls)."""
    out = []
    for b in args.batch_size:
        if args.serial and method == "gsi":
            out.append(("lockstep", 1, True, b))
        out.append(("lockstep", 1, False, b))
        if "async" in args.modes:
            out.append(("async", 1, False, b))
    if "cohorts" in args.modes:
        out += [("cohorts", k, False, b) for b in args.batch_size for k in args.cohorts]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problems", type=int, default=500)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--batch-size", type=int, nargs="+", default=[64, 128], help="problems in flight, one row each")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--modes", nargs="+", default=["async", "cohorts"], choices=["async", "cohorts"],
                    help="rows besides lock-step (the reference, always run)")
    ap.add_argument("--cohorts", nargs="+", type=int, default=[2])
    ap.add_argument("--serial", action="store_true", help="also GSI's lock-step with one engine call at a time")
    ap.add_argument("--max-steps", type=int, default=45)
    ap.add_argument("--json")
    args = ap.parse_args()

    rows = []
    for method in args.methods:
        for mode, k, serial, batch in variants(method, args):
            row = run_one(method, problems=args.problems, n=args.n, batch_size=batch, mode=mode, cohorts=k,
                          serial=serial, max_steps=args.max_steps)
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k not in ("busy_s",)}), file=sys.stderr, flush=True)
            if args.json:  # after every row: a long run that is stopped keeps what it measured
                Path(args.json).write_text(json.dumps(rows, indent=1))
    prints = {m: {r["fingerprint"] for r in rows if r["method"] == m} for m in args.methods}
    assert all(len(v) == 1 for v in prints.values()), f"schedulers chose different steps: {prints}"
    print(markdown(rows))


def lockstep_wall(rows, r) -> float | None:
    for x in rows:
        if (x["method"], x["mode"], x["batch_size"], x["serial"]) == (r["method"], "lockstep", r["batch_size"], False):
            return x["wall_s"]
    return None


def markdown(rows) -> str:
    """The issue's targets for the async rows: wall <= 1.05 x the busiest role's busy time and <= 0.80 x lock-step's
    wall at the same problems in flight."""
    out = ["| method | scheduler | problems in flight | wall (virtual) | small busy | big busy | reward busy | "
           "wall / busiest | wall / sum of roles | wall / lock-step's | async targets (≤ 1.05, ≤ 0.80) |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        sched = {"cohorts": f"cohorts (today's overlap), {r['cohorts']} cohorts", "async": "async (new)",
                 "lockstep": "lock-step" + (", one call at a time" if r["serial"] else "")}[r["mode"]]
        f = r["busy_fraction"]
        ref = lockstep_wall(rows, r)
        vs = r["wall_s"] / ref if ref else None
        target = ""
        if r["mode"] == "async":
            target = ("met" if r["wall_over_busiest"] <= 1.05 and vs is not None and vs <= 0.80 else "not met")
        out.append(f"| {r['method']} | {sched} | {r['batch_size']} | {r['wall_s']:.0f} s | {100 * f['small']:.0f}% | "
                   f"{100 * f['big']:.0f}% | {100 * f['reward']:.0f}% | {r['wall_over_busiest']:.2f} "
                   f"({r['busiest']}) | {r['wall_over_sum']:.2f} | {'' if vs is None else f'{vs:.2f}'} | {target} |")
    return "\n".join(out)


if __name__ == "__main__":
    main()
