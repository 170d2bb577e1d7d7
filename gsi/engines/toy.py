"""The toy world's three trained models (`model=toy`): small Qwen2 models with real, separated skill on
`dataset=arith` (gsi/arith.py), built in code from fixed seeds on first use and cached like the tiny models.

- small (pi_S): 1 head, 2 layers, hidden 64 (205k parameters), trained 600 steps: it has started to carry and
  borrow but slips often (greedy 11.5% on 200 held-out problems; 59% of its sampled steps are right).
- big (pi_B): 2 heads, 3 layers, hidden 128 (885k parameters), trained 1,500 steps: greedy 100%.
- reward: a `Qwen2ForTokenClassification` PRM (one label, read by the `token_classification` adapter at each
  step's delimiter) started from pi_B's backbone and trained 300 steps to say whether a step is correct given
  the steps before it; labels come from gsi.arith.check_steps over correct solutions, corrupted ones and pi_S's
  own samples. Its verdicts on pi_S's samples are far better than chance (AUC 0.87 on 200 held-out problems),
  but they come from knowing *when* pi_S slips (its score rises with the step index, where pi_S's errors sit),
  not from checking the arithmetic: on held-out correct vs corrupted solutions its AUC is 0.50. A PRM that
  checks the sum did not train within budget: pairs of a correct and a corrupted step in the same context (so
  the step index says nothing), with labels at the delimiter or on every token of the step, stayed at chance
  after 1,500 steps. In this world GSI's choice among pi_S's candidates is carried mostly by the importance
  ratio pi_B/pi_S, and its safety by the fallback.

Every model is trained on exactly what it sees at inference: the chat-rendered problem (gsi.prompts.render_prompt
with SYSTEM_PROMPT, the same string as conf/model/toy.yaml's system_prompt: empty, so no system turn) followed by
the solution steps, each tokenised on its own and followed by the delimiter's tokens (how vLLM's generated steps
and the PRM adapter's input are laid out), the last step followed by EOS. Training problems come from gsi.arith's
training side, which never overlaps the held-out problems of `dataset=arith`. The tokenizer is the tiny models'
BPE, trained the same way with the toy world's text added, so that a prompt is 19 tokens, not 42.

Why these sizes: carrying into the tens digit is learnt in a sudden drop of the loss, after a plateau whose length
depends on the seed. With a short context the 3-layer model got past it by step 800-1,200 for every seed tried
(4 of 4); 1-layer and 2-layer models at 128 hidden stayed on the plateau for most seeds within 1,200 steps.

Determinism: THREADS torch threads, torch.use_deterministic_algorithms, fixed seeds for data, initialisation,
batches and sampling; `fingerprint()` hashes every weight and tokenizer file and is written to COMPLETE (and
build.json, with the build time). Two builds on this machine give the same fingerprint; another CPU (another
vector ISA) may round differently, so the tests check the models' skill, not a fingerprint.

    python -m gsi.engines.toy            # build (if needed), print paths, fingerprint and build time
    python -m gsi.engines.toy --eval 200 # also greedy accuracy of pi_S and pi_B and the PRM's AUC on pi_S samples
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

from gsi import arith
from gsi.engines.tiny import DELIMITER, build_tokenizer, cache_root

ROLES = ("small", "big", "reward")
TOY_VERSION = "v2"  # bump when anything below changes what is built
SEED = 4321
SYSTEM_PROMPT = ""  # no system turn: a shorter context, so attention finds the digits sooner
MIN_OPS, MAX_OPS = 2, 4  # the training problems' difficulty range (= conf/dataset/arith.yaml's defaults)

# (hidden, layers, heads, kv heads, intermediate). head_dim = hidden / heads = 64: vLLM's CPU attention needs it.
SHAPES = {
    "small": (64, 2, 1, 1, 256),
    "big": (128, 3, 2, 1, 512),
    "reward": (128, 3, 2, 1, 512),
}
# Optimiser steps (batch BATCH), peak learning rate (cosine decay).
TRAIN = {
    "small": (600, 3e-3),
    "big": (1500, 3e-3),
    "reward": (300, 1e-3),
}
THREADS = 2  # a fixed thread count: the same reduction order, so the same weights, on every run
BATCH = 32
N_TRAIN = 1_000  # distinct training problems (of ~1,500 on the training side for 2..4 operations)
PRM_SAMPLES = 384  # pi_S samples labelled by the checker for the PRM


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
        from gsi.prompts import render_prompt

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


def train_lm(model, examples, steps: int, peak_lr: float, seed: int, desc: str):
    """examples: (prompt ids, solution ids); loss on the solution tokens only."""
    import torch
    from tqdm import tqdm

    opt = torch.optim.AdamW(model.parameters(), lr=peak_lr, weight_decay=0.01, betas=(0.9, 0.98))
    model.train()
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
    model.eval()


def train_prm(model, examples, steps: int, peak_lr: float, seed: int):
    """examples: (token ids, [(position, label)]); BCE on the one logit at each step's delimiter."""
    import torch
    from tqdm import tqdm

    opt = torch.optim.AdamW(model.parameters(), lr=peak_lr, weight_decay=0.01, betas=(0.9, 0.98))
    model.train()
    bar = tqdm(_batches(len(examples), steps, BATCH, seed), total=steps, desc="reward", mininterval=2.0)
    for k, idx in enumerate(bar):
        ids = _pad([examples[i][0] for i in idx], 0)
        mask = _pad([[1] * len(examples[i][0]) for i in idx], 0)
        rows, cols, target = [], [], []
        for b, i in enumerate(idx):
            for pos, lab in examples[i][1]:
                rows.append(b), cols.append(pos), target.append(float(lab))
        for g in opt.param_groups:
            g["lr"] = _lr(k, steps, peak_lr)
        logits = model(input_ids=ids, attention_mask=mask).logits[..., 0]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            logits[torch.tensor(rows), torch.tensor(cols)], torch.tensor(target))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
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
            seed: int = 1) -> tuple[float, int, int, float]:
    """AUC of the PRM's step verdicts against the checker's on pi_S's samples (T = 0.7): (AUC, correct steps,
    wrong steps, one-sided Mann-Whitney p that correct steps do not score higher)."""
    from scipy.stats import mannwhitneyu

    sols = sample(small, enc, [p.text for p in problems], greedy=False, seed=seed)
    scores, labels = [], []
    for p, steps in zip(problems, sols):
        if not steps:
            continue
        scores += prm_scores(prm, enc, p.text, steps)
        labels += arith.check_steps(p, steps)
    pos = [s for s, l in zip(scores, labels) if l]
    neg = [s for s, l in zip(scores, labels) if not l]
    pvalue = float(mannwhitneyu(pos, neg, alternative="greater").pvalue) if pos and neg else float("nan")
    return auc(scores, labels), len(pos), len(neg), pvalue


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
    try:
        tok = build_tokenizer(tmp / "_tokenizer", extra_docs=_tokenizer_docs())
        enc = Encoder(tok)
        train = arith.generate(N_TRAIN, seed=SEED, min_ops=MIN_OPS, max_ops=MAX_OPS, split="train")
        examples = [(enc.prompt(p.text), enc.solution(p.steps())) for p in train]
        models = {}
        for i, role in enumerate(("small", "big")):
            torch.manual_seed(SEED + i)
            model = Qwen2ForCausalLM(_config(role, tok))
            steps, lr = TRAIN[role]
            train_lm(model, examples, steps, lr, SEED + 10 + i, desc=role)
            models[role] = model
        models["reward"] = _train_reward(tok, enc, train, models)
        _save(tmp, tok, models, t0)
        if base.exists():
            shutil.rmtree(base)
        os.replace(tmp, base)
    finally:
        torch.set_num_threads(threads)
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _train_reward(tok, enc, train, models):
    import torch
    from transformers import Qwen2ForTokenClassification

    # PRM data: correct solutions, corrupted ones, and pi_S's own samples, each step labelled by the checker.
    # What it learns (measured, see the module docstring): when pi_S tends to slip, not the arithmetic itself.
    rng = random.Random(SEED + 20)
    prm_examples = []
    for p in train:
        steps, labels = (p.steps(), [True] * (len(p.ops) + 1)) if rng.random() < 0.4 else arith.corrupt(p, rng)
        x = enc.prm(p.text, steps)
        prm_examples.append((x.token_ids, list(zip(x.step_ends, labels))))
    pool = train[:PRM_SAMPLES]
    for p, steps in zip(pool, sample(models["small"], enc, [q.text for q in pool], greedy=False, seed=SEED + 21)):
        if steps:
            x = enc.prm(p.text, steps)
            prm_examples.append((x.token_ids, list(zip(x.step_ends, arith.check_steps(p, steps)))))
    torch.manual_seed(SEED + 2)
    cfg = _config("reward", tok)
    cfg.num_labels = 1
    prm = Qwen2ForTokenClassification(cfg)
    prm.model.load_state_dict(models["big"].model.state_dict())  # start from pi_B's reading of arithmetic
    steps, lr = TRAIN["reward"]
    train_prm(prm, prm_examples, steps, lr, SEED + 12)
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
    """Greedy accuracy of pi_S and pi_B on n held-out problems and the PRM's AUC on pi_S samples."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForTokenClassification, AutoTokenizer

    torch.set_num_threads(THREADS)
    paths = toy_paths()
    tok = AutoTokenizer.from_pretrained(paths["small"])
    enc = Encoder(tok)
    problems = arith.generate(n, seed=seed, min_ops=MIN_OPS, max_ops=MAX_OPS, split="test")
    small = AutoModelForCausalLM.from_pretrained(paths["small"]).eval()
    big = AutoModelForCausalLM.from_pretrained(paths["big"]).eval()
    prm = AutoModelForTokenClassification.from_pretrained(paths["reward"]).eval()
    a, npos, nneg, auc_p = prm_auc(prm, small, enc, problems)
    # Also the AUC on held-out correct and corrupted solutions: whether the PRM checks the arithmetic itself
    rng, scores, labels = random.Random(seed), [], []
    for p in problems:
        steps, lab = (p.steps(), [True] * (len(p.ops) + 1)) if rng.random() < 0.5 else arith.corrupt(p, rng)
        scores += prm_scores(prm, enc, p.text, steps)
        labels += lab
    return {"n": n, "greedy_small": accuracy(small, enc, problems), "greedy_big": accuracy(big, enc, problems),
            "prm_auc_small_samples": a, "prm_auc_p": auc_p, "steps_correct": npos, "steps_wrong": nneg,
            "prm_auc_corrupted": auc(scores, labels)}


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--eval", type=int, default=0, metavar="N", help="also measure on N held-out problems")
    args = ap.parse_args()
    paths = toy_paths()
    for role, path in paths.items():
        print(f"{role:7s} {path}")
    print((toy_dir() / "build.json").read_text().strip())
    if args.eval:
        print(json.dumps(evaluate(args.eval), indent=2))
