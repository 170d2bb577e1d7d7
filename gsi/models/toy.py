"""The toy world's three trained models (`model=toy`): small Qwen2 models with real, separated skill on
`dataset=arith` (gsi/data/arith.py, 2-6 operations), built in code from fixed seeds on first use and cached like the
tiny models. Measured numbers: the README's toy section (`python -m gsi.models.toy --eval 200 --json`).

- small (pi_S): 1 head, 2 layers, hidden 64 (205k parameters), trained 600 steps: it carries and borrows but
  slips often, and more often the longer the problem.
- big (pi_B): 2 heads, 3 layers, hidden 128 (885k parameters): the snapshot after BIG_SNAPSHOT = 400 of a
  1,500-step run. The run's end is near-perfect (98% greedy on 2-6 operations at 1,000 steps); the snapshot has
  headroom (72% at 350 steps, 80% at 450, measured on 200 held-out problems), so the methods can beat it.
- reward: a `Qwen2ForTokenClassification` PRM (one label, read by the `token_classification` adapter at each
  step's delimiter): the big run's final embeddings and 3 layers, frozen, under 2 new layers and a head, trained
  on twins (each training problem's correct solution and a copy whose every step is wrong with probability 1/2,
  so the step index carries nothing) with the checker's verdict at each delimiter and, on every token before it,
  whether the step so far is a prefix of the correct step. It does NOT yet check the arithmetic: measured on
  held-out twins its AUC stays near 0.5 (see the README's toy section for the recipes tried and their figures).

Every model is trained on exactly what it sees at inference: the chat-rendered problem (gsi.data.prompts.render_prompt
with SYSTEM_PROMPT, the same string as conf/model/toy.yaml's system_prompt: empty, so no system turn) followed by
the solution steps, each tokenised on its own and followed by the delimiter's tokens (how vLLM's generated steps
and the PRM adapter's input are laid out), the last step followed by EOS. Training problems come from gsi.data.arith's
training side, which never overlaps the held-out problems of `dataset=arith`. The tokenizer is the tiny models'
BPE, trained the same way with the toy world's text added, so that a prompt is 19 tokens, not 42.

Why these sizes: carrying into the tens digit is learnt in a sudden drop of the loss, after a plateau whose length
depends on the seed. With a short context the 3-layer model got past it by step 800-1,200 for every seed tried
(4 of 4, 2-4 operations); 1-layer and 2-layer models at 128 hidden stayed on the plateau for most seeds within
1,200 steps. On 2-6 operations (2,400 training problems) the big run is at 72% greedy after 350 steps, 80% after
450, 90% after 550, 93% after 700: pi_B's snapshot sits on that rise, so its skill moves with the machine's
rounding more than a converged model's would; the tests check the skill band, not a fingerprint.

Determinism: THREADS torch threads, torch.use_deterministic_algorithms, fixed seeds for data, initialisation,
batches and sampling; `fingerprint()` hashes every weight and tokenizer file and is written to COMPLETE (and
build.json, with the build time). Two builds on this machine give the same fingerprint; another CPU (another
vector ISA) may round differently, so the tests check the models' skill, not a fingerprint.

    python -m gsi.models.toy                    # build (if needed), print paths, fingerprint and build time
    python -m gsi.models.toy --eval 200 --json  # one JSON object: greedy_small, greedy_big (and by number of
                                                 # operations), prm_auc_paired, prm_auc_samples,
                                                 # prm_step_index_corr, build_s, fingerprint, ...
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

from gsi.data import arith
from gsi.models.tiny import DELIMITER, build_tokenizer, cache_root
from gsi.roles import ROLES
TOY_VERSION = "v3"  # bump when anything below changes what is built
SEED = 4321
SYSTEM_PROMPT = ""  # no system turn: a shorter context, so attention finds the digits sooner
MIN_OPS, MAX_OPS = 2, 6  # the training problems' difficulty range (= conf/dataset/arith.yaml's defaults)

# (hidden, layers, heads, kv heads, intermediate). head_dim = hidden / heads = 64: vLLM's CPU attention needs it.
SHAPES = {
    "small": (64, 2, 1, 1, 256),
    "big": (128, 3, 2, 1, 512),
    "reward": (128, 3 + 2, 2, 1, 512),  # the big run's 3 layers + 2 that compare and gather (see _train_reward)
}
# Optimiser steps (batch BATCH), peak learning rate (cosine decay).
TRAIN = {
    "small": (600, 3e-3),
    "big": (1500, 3e-3),
    "reward": (300, 3e-3),
}
BIG_SNAPSHOT = 400  # pi_B is the big run's weights at this step; the PRM reads the same run's final weights
# One thread: the same reduction order, so the same weights, on every run; and on a loaded machine two threads
# spin-wait for each other (seen here at load 9-19: 2-5 s per training step with two threads, about 1 s with one).
THREADS = 1
BATCH = 32
N_TRAIN = 2_400  # distinct training problems (of ~2,700 on the training side for 2..6 operations)
PRM_PROBLEMS = 2_000  # training problems whose correct and corrupted solutions ("twins") teach the PRM
PRM_SAMPLES = 0  # pi_S samples labelled by the checker for the PRM (0: twins alone)
TOKEN_LABEL_WEIGHT = 1.0  # weight of the per-token labels beside the one at each step's delimiter


def toy_dir(root: Path | None = None) -> Path:
    return (root or cache_root()) / f"toy-{TOY_VERSION}"


def toy_paths(root: Path | None = None) -> dict[str, Path]:
    """Build the toy models unless they are already cached; return {role: path}."""
    base = toy_dir(root)
    if not (base / "COMPLETE").exists():
        base.parent.mkdir(parents=True, exist_ok=True)
        with open(base.parent / f".toy-{TOY_VERSION}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one process builds, the others wait for it
            if not (base / "COMPLETE").exists():
                _build(base)
    return {role: base / role for role in ROLES}


def fingerprint(base: Path) -> str:
    h = hashlib.sha256()
    for role in ROLES:
        for name in ("model.safetensors", "tokenizer.json"):
            h.update((base / role / name).read_bytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------------- encoding
class Encoder:
    """Problem + steps -> token ids exactly as the engines lay them out."""

    def __init__(self, tok):
        from gsi.engines.rewards import make_adapter

        self.tok = tok
        self.adapter = make_adapter("token_classification", tok, delimiter=DELIMITER, system_prompt=SYSTEM_PROMPT)
        self.delim = tok.encode(DELIMITER, add_special_tokens=False)

    def prompt(self, problem: str) -> list[int]:
        from gsi.data.prompts import render_prompt

        return render_prompt(self.tok, SYSTEM_PROMPT, problem)

    def solution(self, steps: list[str]) -> list[int]:
        ids = []
        for s in steps[:-1]:
            ids += self.tok.encode(s, add_special_tokens=False) + self.delim
        return ids + self.tok.encode(steps[-1], add_special_tokens=False) + [self.tok.eos_token_id]

    def prm(self, problem: str, steps: list[str]):
        from gsi.engines.base import RewardRequest

        return self.adapter.build(RewardRequest(problem=problem, steps=steps))


def _batches(n_items: int, n_steps: int, batch: int, seed: int):
    rng = random.Random(seed)
    order: list[int] = []
    for _ in range(n_steps):
        if len(order) < batch:
            perm = list(range(n_items))
            rng.shuffle(perm)
            order += perm
        yield order[:batch]
        order = order[batch:]


def _lr(step: int, total: int, peak: float) -> float:
    warm = max(1, total // 20)
    if step < warm:
        return peak * (step + 1) / warm
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def _pad(rows, value):
    import torch

    width = max(len(r) for r in rows)
    return torch.tensor([list(r) + [value] * (width - len(r)) for r in rows])


def train_lm(model, examples, steps: int, peak_lr: float, seed: int, desc: str, snapshot_at: int | None = None):
    """examples: (prompt ids, solution ids); loss on the solution tokens only. Returns a copy of the weights after
    `snapshot_at` steps (None if not asked)."""
    import copy

    import torch
    from tqdm import tqdm

    opt = torch.optim.AdamW(model.parameters(), lr=peak_lr, weight_decay=0.01, betas=(0.9, 0.98))
    model.train()
    snapshot = None
    bar = tqdm(_batches(len(examples), steps, BATCH, seed), total=steps, desc=desc, mininterval=2.0)
    for k, idx in enumerate(bar):
        rows = [examples[i][0] + examples[i][1] for i in idx]
        labels = [[-100] * len(examples[i][0]) + examples[i][1] for i in idx]
        ids, lab = _pad(rows, 0), _pad(labels, -100)
        mask = _pad([[1] * len(r) for r in rows], 0)
        for g in opt.param_groups:
            g["lr"] = _lr(k, steps, peak_lr)
        loss = model(input_ids=ids, attention_mask=mask, labels=lab).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        if k + 1 == snapshot_at:
            snapshot = copy.deepcopy(model).eval()
    model.eval()
    return snapshot


def step_labels(tok, problem: arith.ArithProblem, steps: list[str], x) -> list[tuple[int, bool, float]]:
    """The PRM's training labels for one solution laid out as `x` (Encoder.prm): (position, label, weight).

    At each step's delimiter (where the token_classification adapter reads the score), the checker's verdict,
    weight 1. At every token of the step before it, whether the step written so far is a prefix of the correct
    step (the problem's next operation applied to what the previous step wrote), weight TOKEN_LABEL_WEIGHT: so the
    PRM learns to flag the first token that departs, and the delimiter's label is the minimum over the step.
    """
    verdicts = arith.check_steps(problem, steps)
    out, prev, start = [], problem.start, x.prompt_len
    for k, (step, end) in enumerate(zip(steps, x.step_ends)):
        correct = arith.correct_step(problem, k, prev)
        m = arith._STEP.match(step)
        if m and k < len(problem.ops):
            prev = int(m.group(4))
        want = tok.encode(correct, add_special_tokens=False) if correct is not None else []
        ok = True
        for j, t in enumerate(x.token_ids[start:end]):
            ok = ok and j < len(want) and t == want[j]
            out.append((start + j, ok, TOKEN_LABEL_WEIGHT))
        out.append((end, verdicts[k], 1.0))
        start = end + 1
    return out


def train_prm(model, examples, steps: int, peak_lr: float, seed: int, trainable=lambda name: True):
    """examples: (token ids, [(position, label, weight)]); weighted BCE on the one logit at those positions.
    Only the parameters whose name `trainable` accepts are updated."""
    import torch
    from tqdm import tqdm

    params = []
    for name, p in model.named_parameters():
        p.requires_grad_(bool(trainable(name)))
        if p.requires_grad:
            params.append(p)
    opt = torch.optim.AdamW(params, lr=peak_lr, weight_decay=0.01, betas=(0.9, 0.98))
    model.train()
    bar = tqdm(_batches(len(examples), steps, BATCH, seed), total=steps, desc="reward", mininterval=2.0)
    for k, idx in enumerate(bar):
        ids = _pad([examples[i][0] for i in idx], 0)
        mask = _pad([[1] * len(examples[i][0]) for i in idx], 0)
        rows, cols, target, weight = [], [], [], []
        for b, i in enumerate(idx):
            for pos, lab, w in examples[i][1]:
                rows.append(b), cols.append(pos), target.append(float(lab)), weight.append(w)
        for g in opt.param_groups:
            g["lr"] = _lr(k, steps, peak_lr)
        logits = model(input_ids=ids, attention_mask=mask).logits[..., 0]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            logits[torch.tensor(rows), torch.tensor(cols)], torch.tensor(target), weight=torch.tensor(weight))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()


# ---------------------------------------------------------------------------------------------------- inference
def sample(model, enc: Encoder, problems: list[str], *, greedy: bool, temperature: float = 0.7, seed: int = 0,
           max_new_tokens: int = 64, batch: int = 128) -> list[list[str]]:
    """Each problem's generated steps (HF generate with left padding; for the build and for measurements)."""
    import torch

    out = []
    tok = enc.tok
    torch.manual_seed(seed)
    for b in range(0, len(problems), batch):
        prompts = [enc.prompt(p) for p in problems[b : b + batch]]
        width = max(map(len, prompts))
        ids = torch.tensor([[tok.pad_token_id] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        with torch.no_grad():
            gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                 do_sample=not greedy, temperature=temperature if not greedy else None, top_k=0,
                                 top_p=1.0, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        for row in gen[:, width:].tolist():
            if tok.eos_token_id in row:
                row = row[: row.index(tok.eos_token_id)]
            row = [t for t in row if t != tok.pad_token_id]
            text = tok.decode(row, skip_special_tokens=True)
            out.append([s.strip() for s in text.split(DELIMITER) if s.strip()])
    return out


def accuracy(model, enc: Encoder, problems: list[arith.ArithProblem]) -> float:
    sols = sample(model, enc, [p.text for p in problems], greedy=True)
    return sum(arith.last_answer(s) == p.answer for s, p in zip(sols, problems)) / len(problems)


def prm_scores(model, enc: Encoder, problem: str, steps: list[str]) -> list[float]:
    import torch

    x = enc.prm(problem, steps)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([x.token_ids])).logits[0, :, 0]
    return torch.sigmoid(logits[x.step_ends]).tolist()


def auc(scores: list[float], labels: list[bool]) -> float:
    """Probability that a correct step outscores a wrong one (ties count half)."""
    pos = [s for s, l in zip(scores, labels) if l]
    neg = [s for s, l in zip(scores, labels) if not l]
    if not pos or not neg:
        return float("nan")
    ranked = sorted([(s, 1) for s in pos] + [(s, 0) for s in neg])
    # rank-sum with average ranks for ties
    rank_sum, i = 0.0, 0
    while i < len(ranked):
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        avg = (i + j + 1) / 2
        rank_sum += avg * sum(1 for k in range(i, j) if ranked[k][1])
        i = j
    return (rank_sum - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))


def prm_auc(prm, small, enc: Encoder, problems: list[arith.ArithProblem],
            seed: int = 1) -> tuple[float, int, int, float, float]:
    """The PRM's step verdicts against the checker's on pi_S's samples (T = 0.7): (AUC, correct steps, wrong steps,
    one-sided Mann-Whitney p that correct steps do not score higher, Spearman's correlation of the score with the
    step index over the correct steps)."""
    from scipy.stats import mannwhitneyu, spearmanr

    sols = sample(small, enc, [p.text for p in problems], greedy=False, seed=seed)
    scores, labels, index = [], [], []
    for p, steps in zip(problems, sols):
        if not steps:
            continue
        scores += prm_scores(prm, enc, p.text, steps)
        labels += arith.check_steps(p, steps)
        index += range(len(steps))
    pos = [s for s, l in zip(scores, labels) if l]
    neg = [s for s, l in zip(scores, labels) if not l]
    pvalue = float(mannwhitneyu(pos, neg, alternative="greater").pvalue) if pos and neg else float("nan")
    corr = float(spearmanr([i for i, l in zip(index, labels) if l], pos).correlation) if len(pos) > 2 else float("nan")
    return auc(scores, labels), len(pos), len(neg), pvalue, corr


# ---------------------------------------------------------------------------------------------------- build
def _config(role: str, tok):
    from transformers import Qwen2Config

    hidden, layers, heads, kv, inter = SHAPES[role]
    return Qwen2Config(
        vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=kv, intermediate_size=inter, max_position_embeddings=2048, max_window_layers=layers,
        tie_word_embeddings=False, rope_theta=10000.0, bos_token_id=None, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, torch_dtype="float32",
    )


def _tokenizer_docs() -> list[str]:
    """The toy world's own text, so that the chat roles and 'Compute' are single tokens (the tiny models' corpus
    alone splits 'assistant' into seven): every context is shorter, and training faster."""
    docs = []
    for p in arith.generate(2_000, seed=SEED, min_ops=1, max_ops=6, split="train"):
        docs.append(f"system\nuser\n{p.text}\nassistant\n{p.solution}")
    return docs


def _build(base: Path) -> None:
    import torch
    from transformers import Qwen2ForCausalLM

    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)
    tmp = Path(tempfile.mkdtemp(prefix=".toy-build-", dir=base.parent))
    print(f"building the toy models into {base} (once; about 5 min on 2 idle cores)", flush=True)
    try:
        tok = build_tokenizer(tmp / "_tokenizer", extra_docs=_tokenizer_docs())
        enc = Encoder(tok)
        train = arith.generate(N_TRAIN, seed=SEED, min_ops=MIN_OPS, max_ops=MAX_OPS, split="train")
        examples = [(enc.prompt(p.text), enc.solution(p.steps())) for p in train]
        models = {}
        torch.manual_seed(SEED)
        models["small"] = Qwen2ForCausalLM(_config("small", tok))
        train_lm(models["small"], examples, *TRAIN["small"], SEED + 10, desc="small")
        # One big run: pi_B is its snapshot at BIG_SNAPSHOT steps (headroom for the methods), the PRM reads its
        # final weights (it knows more arithmetic than pi_B, as the papers' PRMs are as large as pi_B or larger).
        torch.manual_seed(SEED + 1)
        run = Qwen2ForCausalLM(_config("big", tok))
        models["big"] = train_lm(run, examples, *TRAIN["big"], SEED + 10, desc="big", snapshot_at=BIG_SNAPSHOT)
        models["reward"] = _train_reward(tok, enc, train, run, models["small"])
        _save(tmp, tok, models, t0)
        if base.exists():
            shutil.rmtree(base)
        os.replace(tmp, base)
    finally:
        torch.set_num_threads(threads)
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _twins(problems, rng: random.Random):
    """Each problem's correct solution and a corrupted one whose every step is wrong with probability 1/2: at
    every step index about as many steps are wrong as right, so the index says nothing about the label and only
    checking the step tells them apart."""
    for p in problems:
        yield p, p.steps()
        yield p, arith.corrupt_each(p, rng)[0]


def _train_reward(tok, enc, train, backbone, small):
    """The PRM: the big run's embeddings and 3 layers, frozen, under 2 new layers and a one-logit head.

    Why 2 more layers (measured, see the README's toy section): to check a written digit the PRM must compare it
    with the digit the arithmetic calls for, which the backbone works out only in its last layer at the token
    before; a 3-layer PRM has no layer left to read that prediction at the next position and compare, and none
    to gather a step's comparisons at its delimiter. Measured: this does not suffice within the build's budget
    (the loss stays at the base rate; the README's toy section has the figures), so the PRM does not check yet.
    """
    import torch
    from transformers import Qwen2ForTokenClassification

    rng = random.Random(SEED + 20)
    prm_examples = []
    for p, steps in _twins(train[:PRM_PROBLEMS], rng):
        x = enc.prm(p.text, steps)
        prm_examples.append((x.token_ids, step_labels(tok, p, steps, x)))
    pool = train[:PRM_SAMPLES]
    for p, steps in zip(pool, sample(small, enc, [q.text for q in pool], greedy=False, seed=SEED + 21)):
        if steps:
            x = enc.prm(p.text, steps)
            prm_examples.append((x.token_ids, step_labels(tok, p, steps, x)))
    torch.manual_seed(SEED + 2)
    cfg = _config("reward", tok)
    cfg.num_labels = 1
    prm = Qwen2ForTokenClassification(cfg)
    missing, unexpected = prm.model.load_state_dict(backbone.model.state_dict(), strict=False)
    n_old = SHAPES["big"][1]
    assert not unexpected and all(k.startswith("layers.") and int(k.split(".")[1]) >= n_old for k in missing)
    new = tuple(f"model.layers.{i}." for i in range(n_old, cfg.num_hidden_layers)) + ("model.norm.", "score.")
    train_prm(prm, prm_examples, *TRAIN["reward"], SEED + 12, trainable=lambda name: name.startswith(new))
    return prm


def _save(tmp: Path, tok, models, t0: float) -> None:
    import torch
    from transformers import GenerationConfig

    for role, model in models.items():
        out = tmp / role
        model.to(torch.float32).save_pretrained(out, safe_serialization=True)
        tok.save_pretrained(out)
        if role != "reward":
            GenerationConfig(eos_token_id=[tok.eos_token_id], pad_token_id=tok.pad_token_id,
                             do_sample=True, temperature=0.7).save_pretrained(out)
    shutil.rmtree(tmp / "_tokenizer")
    info = {"fingerprint": fingerprint(tmp), "build_s": round(time.perf_counter() - t0, 1),
            "load_avg": os.getloadavg()[0], "params": {r: sum(p.numel() for p in m.parameters())
                                                       for r, m in models.items()}}
    (tmp / "build.json").write_text(json.dumps(info, indent=2) + "\n")
    (tmp / "COMPLETE").write_text(info["fingerprint"] + "\n")


def evaluate(n: int = 200, seed: int = 0) -> dict:
    """The toy world's skill on n held-out problems of the default difficulty range (transformers, no engines).

    greedy_small, greedy_big: greedy accuracy (and by number of operations); prm_auc_paired: the PRM's AUC on
    held-out twins (each problem's correct solution and a corrupted one, the step that goes wrong against the
    correct step at the same index: the index carries nothing); prm_auc_samples: its AUC against the checker on
    pi_S's own sampled steps (T = 0.7), with the one-sided Mann-Whitney p that correct steps do not score higher;
    prm_step_index_corr: Spearman's correlation of its score with the step index on the correct steps of pi_S's
    samples (near 0 for a PRM that checks); build_s and fingerprint from the build.
    """
    import torch
    from scipy.stats import spearmanr
    from transformers import AutoModelForCausalLM, AutoModelForTokenClassification, AutoTokenizer

    torch.set_num_threads(THREADS)
    paths = toy_paths()
    tok = AutoTokenizer.from_pretrained(paths["small"])
    enc = Encoder(tok)
    problems = arith.generate(n, seed=seed, min_ops=MIN_OPS, max_ops=MAX_OPS, split="test")
    small = AutoModelForCausalLM.from_pretrained(paths["small"]).eval()
    big = AutoModelForCausalLM.from_pretrained(paths["big"]).eval()
    prm = AutoModelForTokenClassification.from_pretrained(paths["reward"]).eval()
    out = {"n": n}
    for role, model in (("small", small), ("big", big)):
        sols = sample(model, enc, [p.text for p in problems], greedy=True)
        right = [arith.last_answer(s) == p.answer for s, p in zip(sols, problems)]
        out[f"greedy_{role}"] = sum(right) / n
        by: dict[int, list[bool]] = {}
        for p, r in zip(problems, right):
            by.setdefault(len(p.ops), []).append(r)
        out[f"greedy_{role}_by_ops"] = {k: round(sum(v) / len(v), 3) for k, v in sorted(by.items())}
    # twins at the same step index
    rng, good, bad = random.Random(seed), [], []
    for p in problems:
        steps, labels = arith.corrupt(p, rng)
        k = labels.index(False)
        good.append(prm_scores(prm, enc, p.text, p.steps())[k])
        bad.append(prm_scores(prm, enc, p.text, steps)[k])
    out["prm_auc_paired"] = auc(good + bad, [True] * n + [False] * n)
    out["prm_paired_wins"] = sum((g > b) + 0.5 * (g == b) for g, b in zip(good, bad)) / n
    # pi_S's own samples
    a, npos, nneg, pvalue, index_corr = prm_auc(prm, small, enc, problems)
    out.update(prm_auc_samples=a, prm_auc_samples_p=pvalue, steps_correct=npos, steps_wrong=nneg,
               prm_step_index_corr=index_corr)
    info = json.loads((toy_dir() / "build.json").read_text())
    out.update(build_s=info["build_s"], fingerprint=info["fingerprint"])
    return out


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--eval", type=int, default=0, metavar="N", help="also measure on N held-out problems")
    ap.add_argument("--json", action="store_true", help="print one JSON object (with --eval: the measurements)")
    args = ap.parse_args()
    paths = toy_paths()
    info = json.loads((toy_dir() / "build.json").read_text())
    if args.json:
        result = {"paths": {r: str(p) for r, p in paths.items()}, **info}
        if args.eval:
            result.update(evaluate(args.eval))
        print(json.dumps(result))
    else:
        for role, path in paths.items():
            print(f"{role:7s} {path}")
        print(json.dumps(info, indent=2))
        if args.eval:
            print(json.dumps(evaluate(args.eval), indent=2))
