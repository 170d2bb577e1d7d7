"""A vLLM engine on virtual time, iteration by iteration: the cost model of one role on one H100 and the scheduler
that decides what each decode iteration runs (for bench/simgpu.py).

vLLM's V1 scheduler as our engines configure it: every iteration first gives each running sequence one token,
then fills what is left of its token budget (max_num_batched_tokens, 65536) with whole prompts of waiting
sequences, admitted in arrival order while fewer than max_num_seqs run and their KV cache fits (our engines never
split a prompt: a seeded request's prefill must not be chunked, vllm-facts §4). A sequence's prompt iteration
yields its first token; it leaves when it has all its tokens. A request (a prompt's n samples, a teacher-forced scoring, a PRM scoring: the last two
are prompt-only, one token) ends with its last sequence. Requests that arrive while an iteration runs join the
next one: that is continuous batching, whether they came in the same engine call or not.

An iteration takes
    step floor + weight read + decode tokens x per-token compute + prompt tokens / prefill rate
    + KV bytes of the decoding sequences' contexts / effective bandwidth + the arrivals' call and sequence overheads.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


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
    kv_tokens: int  # KV-cache capacity in tokens
    call_s: float = 0.005  # per engine call (LLM.generate entry, output assembly)
    seq_s: float = 1e-4  # per sequence (input processing, detokenisation, Python objects)
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 65536  # conf/hardware's: above any prompt, so that no prefill is split


# H100 SXM 80GB: 3.35 TB/s HBM3 and 989 TFLOP/s dense BF16 (NVIDIA H100 datasheet). Achieved fractions from public
# vLLM figures: single-stream decode of Llama-3.1-8B at ~77% of the HBM roofline (vLLM 0.23, J. Musgrave, "vLLM
# throughput-latency sweep on NVIDIA A100", johnmusgrave.com), ~12,500 output tok/s for Llama-3.1-8B on one H100
# at saturation (morphllm.com/vllm-benchmarks, 2026; this model gives 9.5k at 256 sequences of 1k context),
# TTFT-derived prefill of ~25k tok/s for an 8B-class model (vLLM v0.6.0 blog, 2024-09: 5x lower TPOT, 2.7x
# throughput vs v0.5.3 on Llama 8B / H100). Per-iteration overhead 1.5 ms: vLLM V1 with CUDA graphs (same blog:
# CPU overhead was the bottleneck before 0.6; ~1-2 ms per step after). KV capacity: 90% of 80 GB
# (gpu_memory_utilization) less the bf16 weights and ~2 GB of activations, over the bytes per token.
BW = 3.35e12 * 0.77
HBM = 80e9 * 0.9 - 2e9
QWEN_7B = CostModel(  # Qwen2.5-Math-7B-Instruct / Qwen2.5-Math-PRM-7B: 7.6B params, 28 layers, 4 KV heads x 128
    name="7B", prefill_tok_s=25_000, weight_read_s=2 * 7.6e9 / BW, step_overhead_s=1.5e-3,
    token_s=2 * 7.6e9 / (989e12 * 0.5), kv_bytes_per_token=28 * 4 * 128 * 2 * 2, bandwidth=BW,
    kv_tokens=int((HBM - 2 * 7.6e9) / (28 * 4 * 128 * 2 * 2)))
QWEN_1_5B = CostModel(  # Qwen2.5-Math-1.5B-Instruct: 1.54B params, 28 layers, 2 KV heads x 128
    name="1.5B", prefill_tok_s=100_000, weight_read_s=2 * 1.54e9 / BW, step_overhead_s=1.5e-3,
    token_s=2 * 1.54e9 / (989e12 * 0.3), kv_bytes_per_token=28 * 2 * 128 * 2 * 2, bandwidth=BW,
    kv_tokens=int((HBM - 2 * 1.54e9) / (28 * 2 * 128 * 2 * 2)))
COST_MODELS = {"small": QWEN_1_5B, "big": QWEN_7B, "reward": QWEN_7B}


class _Seq:
    __slots__ = ("req", "prefill", "out", "ctx", "final")

    def __init__(self, req, prefill: int, out: int, prompt: int):
        # prompt tokens still to compute (at least 1: vLLM computes the last prompt token even on a cache hit),
        # tokens still to produce, current context, context at the end (its KV reservation)
        self.req, self.prefill, self.out, self.ctx, self.final = req, max(1, prefill), max(1, out), prompt, prompt + out


class IterationEngine:
    """One role's engine. `add` requests at the virtual `now`; `peek` the end of the iteration under way (None:
    idle); `commit` it, which returns the requests that ended with it. The planned iteration is frozen when
    planned, so requests added meanwhile join the next one."""

    def __init__(self, model: CostModel):
        self.model = model
        self.t = 0.0  # when the next iteration starts
        self.waiting: deque[_Seq] = deque()
        self.running: list[_Seq] = []
        self.reserved = 0  # KV tokens reserved by the running sequences
        self.left: dict = {}  # request -> its sequences not yet done
        self.overhead = 0.0  # call and sequence overheads of the arrivals, paid by the next iteration
        self.plan = None  # (end, decoding sequences, [(sequence, prompt chunk)])
        self.busy = 0.0
        self.intervals: list[tuple[float, float]] = []

    def add(self, now: float, req, seqs: list[tuple[int, int, int]], call_overhead: bool) -> None:
        """Request `req`: its sequences as (uncached prompt tokens, tokens to produce, prompt tokens)."""
        if self.plan is None and not self.running and not self.waiting:
            self.t = max(self.t, now)  # an idle engine starts at once
        self.waiting.extend(_Seq(req, *s) for s in seqs)
        self.left[req] = len(seqs)
        self.overhead += self.model.seq_s * len(seqs) + (self.model.call_s if call_overhead else 0.0)

    def peek(self) -> float | None:
        if self.plan is None and (self.running or self.waiting):
            self.plan = self._schedule()
        return None if self.plan is None else self.plan[0]

    def _schedule(self):
        m = self.model
        decoding = [q for q in self.running if q.prefill == 0]
        budget = m.max_num_batched_tokens - len(decoding)
        chunks = []
        while (self.waiting and len(self.running) < m.max_num_seqs
               and (self.waiting[0].prefill <= budget or not chunks and not decoding)
               and (self.reserved + self.waiting[0].final <= m.kv_tokens or not self.running)):
            q = self.waiting.popleft()
            self.running.append(q)
            self.reserved += q.final
            chunks.append((q, q.prefill))
            budget -= q.prefill
        seconds = (m.step_overhead_s + m.weight_read_s + len(decoding) * m.token_s
                   + sum(c for _, c in chunks) / m.prefill_tok_s
                   + sum(q.ctx for q in decoding) * m.kv_bytes_per_token / m.bandwidth + self.overhead)
        self.overhead = 0.0
        return self.t + seconds, decoding, chunks

    def commit(self) -> list:
        end, decoding, chunks = self.plan
        self.plan = None
        self.busy += end - self.t
        self.intervals.append((self.t, end))
        self.t = end
        for q in decoding:
            q.out -= 1
            q.ctx += 1
        for q, c in chunks:
            q.prefill -= c
            if q.prefill == 0:
                q.out -= 1
                q.ctx += 1
        ended = []
        if any(q.out == 0 for q in self.running):
            keep = []
            for q in self.running:
                if q.out > 0:
                    keep.append(q)
                    continue
                self.reserved -= q.final
                self.left[q.req] -= 1
                if self.left[q.req] == 0:
                    del self.left[q.req]
                    ended.append(q.req)
            self.running = keep
        return ended
