"""What the toy world's models are (gsi.models.toy builds and measures them): sizes, seeds, training data
and its layout (and the trained-PRM labels that bench/toy_prm_probe.py still probes). Changing anything here, or
in gsi/models/toy_train.py, changes what is built: bump TOY_VERSION.

- small (pi_S): 1 head, 2 layers, hidden 64 (205k parameters), trained 1,200 steps: it finds the operands and
  carries, but slips often (34% greedy on 2-6 operations, measured on 400 held-out problems).
- big (pi_B): 2 heads, 3 layers, hidden 128 (885k parameters): the snapshot after BIG_SNAPSHOT = 450 of a
  1,200-step run. The run's end is near-perfect; the snapshot has headroom and its accuracy falls with the
  length (70% greedy: 84% on 2 operations, 53% on 6), so the methods can beat it. Measured while choosing it
  (400 held-out problems, greedy): 47% after 400 steps, 70% after 450, 74% after 500, 88% after 550.
- reward: a verifier LM, the same 1,200-step run's final weights (885k parameters), read by the `lm_verifier`
  adapter (gsi.engines.verifier): a step's reward is the lowest probability it gives any token of the step,
  teacher-forced on the problem and the steps before it, i.e. the probability of the first token it would not
  have written. As in the papers, the PRM comes from pi_B's family (Qwen2.5-Math-PRM-7B is fine-tuned from
  Qwen2.5-Math-7B) and is stronger than pi_B; it is not pi_B's own log-prob (other weights), so GSI's tilt does
  not count pi_B twice. No PRM is trained: ten recipes for a trained token-classification PRM stayed at AUC
  0.49-0.63 on held-out twins (README, toy section; bench/toy_prm_probe.py reproduces them), while the final LM's
  next-token prediction already holds the check.

Every model is trained on exactly what it sees at inference: the chat-rendered problem (gsi.data.prompts.render_prompt
with SYSTEM_PROMPT, the same string as conf/model/toy.yaml's system_prompt: empty, so no system turn) followed by
the solution steps, each tokenised on its own and followed by the delimiter's tokens (how vLLM's generated steps
and the PRM adapter's input are laid out), the last step followed by EOS. Training problems come from gsi.data.arith's
training side, which never overlaps the held-out problems of `dataset=arith`. The tokenizer is the tiny models'
BPE, trained the same way with the toy world's text added, so that a prompt is 19 tokens, not 42.

Why these sizes: finding each step's operand and carrying into the tens digit are learnt in a sudden drop of the
loss. The 3-layer model gets past it within 1,200 steps at a peak rate of 1e-3 (99.5% greedy after 1,100 steps of
a 1,500-step run; 3e-3 got there later); 1-layer and 2-layer models at 128 hidden stayed on the plateau for most
seeds (v3). pi_B's snapshot sits on that rise, so its skill moves with the machine's rounding more than a
converged model's would; the tests check the skill band, not a fingerprint. The whole build trains 2,400 steps
(about 5 min on one core).

Determinism: THREADS torch threads, torch.use_deterministic_algorithms, fixed seeds for data, initialisation,
batches and sampling; `gsi.models.tiny.fingerprint()` hashes every weight and tokenizer file and is written to
COMPLETE (and build.json, with the build time). Two builds on this machine give the same fingerprint; another CPU
(another vector ISA) may round differently, so the tests check the models' skill, not a fingerprint.
"""

from __future__ import annotations

from pathlib import Path

from gsi.data import arith
from gsi.data.prompts import render_prompt
from gsi.engines.base import RewardRequest
from gsi.engines.rewards import make_adapter
from gsi.models.tiny import DELIMITER, cache_root
from gsi.roles import ROLES  # noqa: F401 - the recipe names the roles it builds

TOY_VERSION = "v5"  # bump when anything here or in toy_train.py changes what is built
SEED = 4321
SYSTEM_PROMPT = ""  # no system turn: a shorter context, so attention finds the digits sooner
MIN_OPS, MAX_OPS = 2, 6  # the training problems' difficulty range (= conf/dataset/arith.yaml's defaults)

# (hidden, layers, heads, kv heads, intermediate). head_dim = hidden / heads = 64: vLLM's CPU attention needs it.
SHAPES = {
    "small": (64, 2, 1, 1, 256),
    "big": (128, 3, 2, 1, 512),
    "reward": (128, 3, 2, 1, 512),  # the big run's final weights (a verifier LM, see toy_train.build)
}
# Optimiser steps (batch BATCH), peak learning rate (cosine decay).
TRAIN = {
    "small": (1200, 3e-3),
    "big": (1200, 1e-3),
}
BIG_SNAPSHOT = 450  # pi_B is the big run's weights at this step; the PRM is the same run's final weights
# One thread: the same reduction order, so the same weights, on every run; and on a loaded machine two threads
# spin-wait for each other (seen here at load 9-19: 2-5 s per training step with two threads, about 1 s with one).
THREADS = 1
BATCH = 32
N_TRAIN = 2_400  # distinct training problems (of ~17 million on the training side for 2..6 operations)
# The trained-PRM labels below (step_labels) are not part of the build any more: bench/toy_prm_probe.py
# uses them to reproduce the failed recipes (README, toy section).
TOKEN_LABEL_WEIGHT = 1.0  # weight of the per-token labels beside the one at each step's delimiter


def toy_dir(root: Path | None = None) -> Path:
    return (root or cache_root()) / f"toy-{TOY_VERSION}"


class Encoder:
    """Problem + steps -> token ids exactly as the engines lay them out."""

    def __init__(self, tok):
        self.tok = tok
        # the PRM's layout is the generators' (the lm_verifier adapter, conf/model/toy.yaml)
        self.adapter = make_adapter("lm_verifier", tok, delimiter=DELIMITER, system_prompt=SYSTEM_PROMPT)
        self.delim = tok.encode(DELIMITER, add_special_tokens=False)

    def prompt(self, problem: str) -> list[int]:
        return render_prompt(self.tok, SYSTEM_PROMPT, problem)

    def solution(self, steps: list[str]) -> list[int]:
        ids = []
        for s in steps[:-1]:
            ids += self.tok.encode(s, add_special_tokens=False) + self.delim
        return ids + self.tok.encode(steps[-1], add_special_tokens=False) + [self.tok.eos_token_id]

    def prm(self, problem: str, steps: list[str]):
        return self.adapter.build(RewardRequest(problem=problem, steps=steps))


def step_labels(tok, problem: arith.ArithProblem, steps: list[str], x, *, encode=None,
                token_weight: float = TOKEN_LABEL_WEIGHT) -> list[tuple[int, bool, float]]:
    """A trained PRM's labels for one solution laid out as `x` (Encoder.prm): (position, label, weight); for
    bench/toy_prm_probe.py.

    At each step's delimiter (where the token_classification adapter reads the score), the checker's verdict,
    weight 1. At every token of the step before it, whether the step written so far is a prefix of the correct
    step (the problem's next operation applied to what the previous step wrote), weight TOKEN_LABEL_WEIGHT: so the
    PRM learns to flag the first token that departs, and the delimiter's label is the minimum over the step.
    `encode` (text -> ids; the tokenizer's by default) and `token_weight` let bench/toy_prm_probe.py try other
    number tokenisations and weights with the same labels.
    """
    if encode is None:
        encode = lambda text: tok.encode(text, add_special_tokens=False)  # noqa: E731
    verdicts = arith.check_steps(problem, steps)
    out, prev, start = [], problem.start, x.prompt_len
    for k, (step, end) in enumerate(zip(steps, x.step_ends)):
        correct = arith.correct_step(problem, k, prev)
        m = arith._STEP.match(step)
        if m and k < len(problem.ops):
            prev = int(m.group(4))
        want = encode(correct) if correct is not None else []
        ok = True
        for j, t in enumerate(x.token_ids[start:end]):
            ok = ok and j < len(want) and t == want[j]
            out.append((start + j, ok, token_weight))
        out.append((end, verdicts[k], 1.0))
        start = end + 1
    return out


def model_config(role: str, tok):
    from transformers import Qwen2Config

    hidden, layers, heads, kv, inter = SHAPES[role]
    return Qwen2Config(
        vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=kv, intermediate_size=inter, max_position_embeddings=2048, max_window_layers=layers,
        tie_word_embeddings=False, rope_theta=10000.0, bos_token_id=None, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, torch_dtype="float32",
    )


def tokenizer_docs() -> list[str]:
    """The toy world's own text, so that the chat roles and 'Compute' are single tokens (the tiny models' corpus
    alone splits 'assistant' into seven): every context is shorter, and training faster."""
    docs = []
    for p in arith.generate(2_000, seed=SEED, min_ops=1, max_ops=6, split="train"):
        docs.append(f"system\nuser\n{p.text}\nassistant\n{p.solution}")
    return docs
