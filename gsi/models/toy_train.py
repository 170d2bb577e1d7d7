"""Training the toy models and writing a build (gsi.models.toy.toy_paths calls `build` once, under a lock).

Deterministic: THREADS torch threads, torch.use_deterministic_algorithms and the recipe's fixed seeds
(gsi/models/toy_recipe.py); any change here changes what is built: bump TOY_VERSION.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

from gsi.data import arith
from gsi.models.tiny import build_tokenizer, fingerprint
from gsi.models.toy_eval import sample
from gsi.models.toy_recipe import (BATCH, BIG_SNAPSHOT, MAX_OPS, MIN_OPS, N_TRAIN, PRM_PROBLEMS, PRM_SAMPLES, SEED,
                                   SHAPES, THREADS, TRAIN, Encoder, model_config, step_labels,
                                   tokenizer_docs, twins)


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


def build(base: Path) -> None:
    """Train the three models and write them (tokenizer, weights, build.json, COMPLETE) to `base`, atomically."""
    import torch
    from transformers import Qwen2ForCausalLM

    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)
    tmp = Path(tempfile.mkdtemp(prefix=".toy-build-", dir=base.parent))
    print(f"building the toy models into {base} (once; about 5 min on 2 idle cores)", flush=True)
    try:
        tok = build_tokenizer(tmp / "_tokenizer", extra_docs=tokenizer_docs())
        enc = Encoder(tok)
        train = arith.generate(N_TRAIN, seed=SEED, min_ops=MIN_OPS, max_ops=MAX_OPS, split="train")
        examples = [(enc.prompt(p.text), enc.solution(p.steps())) for p in train]
        models = {}
        torch.manual_seed(SEED)
        models["small"] = Qwen2ForCausalLM(model_config("small", tok))
        train_lm(models["small"], examples, *TRAIN["small"], SEED + 10, desc="small")
        # One big run: pi_B is its snapshot at BIG_SNAPSHOT steps (headroom for the methods), the PRM reads its
        # final weights (it knows more arithmetic than pi_B, as the papers' PRMs are as large as pi_B or larger).
        torch.manual_seed(SEED + 1)
        run = Qwen2ForCausalLM(model_config("big", tok))
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
    for p, steps in twins(train[:PRM_PROBLEMS], rng):
        x = enc.prm(p.text, steps)
        prm_examples.append((x.token_ids, step_labels(tok, p, steps, x)))
    pool = train[:PRM_SAMPLES]
    for p, steps in zip(pool, sample(small, enc, [q.text for q in pool], greedy=False, seed=SEED + 21)):
        if steps:
            x = enc.prm(p.text, steps)
            prm_examples.append((x.token_ids, step_labels(tok, p, steps, x)))
    torch.manual_seed(SEED + 2)
    cfg = model_config("reward", tok)
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
