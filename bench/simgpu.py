"""Simulated-GPU benchmark: the real methods and schedulers on exact-table engines whose calls take VIRTUAL time
from a cost model of vLLM on one H100 per role. Lock-step against overlapped, at the papers' settings.

    PYTHONPATH=. python bench/simgpu.py                       # 500 problems, n = 16, GSI / RSD / soft BoN pi_B
    PYTHONPATH=. python bench/simgpu.py --problems 100 --methods gsi --cohorts 2 3 --markdown

Nothing sleeps: a virtual clock (VirtualClock) advances only when every thread of the run waits on an engine, and
grants the waiting call with the earliest virtual arrival first, so each role serves its calls one at a time in
virtual-arrival order (what a vLLM engine with one caller lock does) and independent roles overlap exactly as far
as the scheduler lets them. The methods, the scheduler and gsi.runtime.concurrency are the real ones.

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
import json
import math
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gsi.runtime import concurrency  # noqa: E402
from gsi.engines.base import Engines  # noqa: E402
from gsi.engines.table import TableGenerator, TableReward  # noqa: E402


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
# The virtual clock
# ---------------------------------------------------------------------------------------------------------------
class VirtualClock(concurrency.Observer):
    """Conservative discrete-event time for the run's threads (see the module docstring)."""

    def __init__(self, roles=("small", "big", "reward")):
        self.cv = threading.Condition()
        self.now: dict[int, float] = {}  # per thread
        self.path: dict[int, str] = {}  # per thread: a stable name for tie-breaking
        self.active = 0  # threads running Python (not waiting on an engine or on their children)
        self.pending: list = []  # (arrival, path, role, thread, seconds)
        self.granted: set[int] = set()
        self.free = {r: 0.0 for r in roles}  # when each role's engine is next idle
        self.busy = {r: 0.0 for r in roles}

    def start(self) -> None:
        me = threading.get_ident()
        with self.cv:
            self.now[me], self.path[me], self.active = 0.0, "main", 1

    def wall(self) -> float:
        return self.now[threading.get_ident()]

    # concurrency.Observer
    def fork(self, n: int):
        me = threading.get_ident()
        with self.cv:
            self.active += n - 1  # the parent waits; its n children run
            return {"parent": me, "t": self.now[me], "path": self.path[me], "left": n, "ends": []}

    def child_start(self, token) -> None:
        me = threading.get_ident()
        with self.cv:
            self.now[me] = token["t"]
            self.path[me] = f"{token['path']}/{threading.current_thread().name}"

    def child_end(self, token) -> None:
        me = threading.get_ident()
        with self.cv:
            token["ends"].append(self.now.pop(me))
            self.path.pop(me)
            token["left"] -= 1
            self.active -= 1
            if token["left"] == 0:  # the parent runs again, at its last child's end
                self.now[token["parent"]] = max(token["ends"])
                self.active += 1
            self._grant()

    def joined(self, token) -> None:
        pass

    # engine calls
    def occupy(self, role: str, seconds: float) -> None:
        me = threading.get_ident()
        with self.cv:
            self.pending.append((self.now[me], self.path[me], role, me, seconds))
            self.active -= 1
            self._grant()
            while me not in self.granted:
                self.cv.wait()
            self.granted.discard(me)

    def _grant(self) -> None:
        if self.active > 0 or not self.pending:
            return
        self.pending.sort(key=lambda p: (p[0], p[1]))
        arrival, _, role, thread, seconds = self.pending.pop(0)
        start = max(arrival, self.free[role])
        self.free[role] = start + seconds
        self.busy[role] += seconds
        self.now[thread] = start + seconds
        self.granted.add(thread)
        self.active += 1
        self.cv.notify_all()


Clock = VirtualClock


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
    def __init__(self, role, probs, clock, cost: CostModel, **kw):
        super().__init__(role, probs, **kw)
        self.clock, self.cost, self.cache = clock, cost, PrefixCache()

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
        self.clock.occupy(self.role, generate_s(self.cost, prompts, cached, lengths))
        return out

    def score(self, contexts, continuations):
        out = super().score(contexts, continuations)
        prompts, cached = [], []
        for ctx, cont in zip(contexts, continuations):
            key = tuple(ctx) + tuple(cont)
            cached.append(self.cache.cached(key, sim_tokens))
            prompts.append(sim_tokens(key))
            self.cache.add(key)
        self.clock.occupy(self.role, prefill_s(self.cost, prompts, cached))
        return out


class SimReward(TableReward):
    """The table reward shifted per problem (a hash of its text): hard problems get lower rewards."""

    def __init__(self, rewards, clock, cost: CostModel, **kw):
        super().__init__(rewards, **kw)
        self.clock, self.cost, self.cache = clock, cost, PrefixCache()
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
        self.clock.occupy("reward", prefill_s(self.cost, prompts, cached))
        return out


def sim_engines(clock) -> Engines:
    return Engines(small=SimGenerator("small", PI_S, clock, COST_MODELS["small"], eos_step=0, texts=TEXTS),
                   big=SimGenerator("big", PI_B, clock, COST_MODELS["big"], eos_step=0, texts=TEXTS),
                   reward=SimReward(REWARD, clock, COST_MODELS["reward"], texts=TEXTS))


# ---------------------------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------------------------
METHODS = {  # the papers' settings (conf/experiment/paper_*.yaml) at n = 16, beta = 20
    "gsi": ["method=gsi", "method.threshold=0.5", "method.threshold_on=tilted"],
    "rsd": ["method=rsd", "method.delta=0.7", "method.n_big=16"],
    "bon_big": ["method=bon", "method.policy=big", "method.selection=soft", "method.level=step"],
}


def run_one(method: str, *, problems: int, n: int, batch_size: int, mode: str, cohorts: int,
            concurrent_calls: bool = True, max_steps: int = 45) -> dict:
    from gsi.config.schema import compose_config
    from gsi.methods import build_method
    from gsi.methods.base import Method, StepContext
    from gsi.runtime.scheduler import step_all
    from gsi.runtime.state import ProblemState
    from gsi.reporting.utilisation import utilisation

    cfg = compose_config("model=tiny", "hardware=cpu", "beta=20", f"method.n={n}", *METHODS[method])
    # batch_size here is the problems in flight; the scheduler's batch_size is per cohort
    per_call = batch_size if mode == "lockstep" else math.ceil(batch_size / cohorts)
    clock = Clock()
    engines = sim_engines(clock)
    ctx = StepContext(seed=0, max_step_tokens=512, max_steps=max_steps, window=100_000)  # stops: EOS or max_steps
    method_obj = build_method(cfg.method, engines, ctx)
    states = [ProblemState(index=i, id=f"p{i}", problem=f"problem {i}", reference="1", prompt_ids=[10_000 + i],
                           context=[10_000 + i]) for i in range(problems)]
    concurrency.set_observer(clock)
    saved = Method.__dict__["concurrently"]
    if not concurrent_calls:  # today's lock-step: one call at a time, even independent ones
        Method.concurrently = staticmethod(lambda *calls: [c() for c in calls])
    try:
        clock.start()
        t0 = time.perf_counter()
        step_all(states, method_obj, ctx, batch_size=per_call, mode=mode, cohorts=cohorts,
                 on_finish=lambda s, t: None)
        real = time.perf_counter() - t0
    finally:
        concurrency.set_observer(None)
        Method.concurrently = saved
    wall = clock.wall()
    use = utilisation({r: {"busy_s": b} for r, b in clock.busy.items()}, wall)
    return {"method": method, "mode": mode, "cohorts": cohorts if mode == "overlap" else 1,
            "concurrent_calls": concurrent_calls, "problems": problems, "n": n, "batch_size": batch_size,
            "wall_s": wall, "busy_s": clock.busy, "busy_fraction": use["busy_fraction"],
            "wall_over_busiest": use["wall_over_busiest"], "busiest": use["busiest_role"],
            "wall_over_sum": use["wall_over_sum"], "real_s": real,
            "steps": sum(len(s.steps) for s in states),
            "accepted": sum(bool(st.accepted) for s in states for st in s.steps),
            "fingerprint": hashlib.sha256(json.dumps([[st.token_ids for st in s.steps] for s in states])
                                          .encode()).hexdigest()[:12]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problems", type=int, default=500)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--cohorts", nargs="+", type=int, default=[2, 3])
    ap.add_argument("--lockstep-only", action="store_true",
                    help="only lock-step rows (e.g. with --batch-size 128 for a same-in-flight comparison)")
    ap.add_argument("--json")
    args = ap.parse_args()

    rows = []
    for method in args.methods:
        variants = [("lockstep", 1, False), ("lockstep", 1, True)] if method == "gsi" else [("lockstep", 1, True)]
        variants = [(m, k, c, args.batch_size) for m, k, c in variants]
        # overlapped: batch_size problems in flight in all (smaller calls), and batch_size per cohort (the
        # lock-step run's call sizes, k times the problems in flight)
        if not args.lockstep_only:
            variants += [("overlap", k, True, b) for k in args.cohorts
                         for b in (args.batch_size, k * args.batch_size)]
        for mode, k, conc, batch in variants:
            row = run_one(method, problems=args.problems, n=args.n, batch_size=batch, mode=mode,
                          cohorts=k, concurrent_calls=conc)
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k not in ("busy_s",)}), file=sys.stderr, flush=True)
    prints = {m: {r["fingerprint"] for r in rows if r["method"] == m} for m in args.methods}
    assert all(len(v) == 1 for v in prints.values()), f"schedulers chose different steps: {prints}"
    print(markdown(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


def markdown(rows) -> str:
    out = ["| method | scheduler | problems in flight | wall (virtual) | small busy | big busy | reward busy | "
           "wall / busiest | wall / sum of roles | target ≤ 1.15 |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        sched = (f"overlap, {r['cohorts']} cohorts" if r["mode"] == "overlap"
                 else "lock-step" + ("" if r["concurrent_calls"] else ", one call at a time"))
        f = r["busy_fraction"]
        out.append(f"| {r['method']} | {sched} | {r['batch_size']} | {r['wall_s']:.0f} s | {100 * f['small']:.0f}% | "
                   f"{100 * f['big']:.0f}% | {100 * f['reward']:.0f}% | {r['wall_over_busiest']:.2f} "
                   f"({r['busiest']}) | {r['wall_over_sum']:.2f} | "
                   f"{'met' if r['wall_over_busiest'] <= 1.15 else 'not met'} |")
    return "\n".join(out)


if __name__ == "__main__":
    main()
