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
from gsi.models.toy_recipe import (BATCH, BIG_SNAPSHOT, MAX_OPS, MIN_OPS, N_TRAIN, SEED, THREADS, TRAIN, Encoder,
                                   model_config, tokenizer_docs)


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


def build(base: Path) -> None:
    """Train pi_S and the big run (pi_B its snapshot, the verifier PRM its end) and write the three models
    (tokenizer, weights, build.json, COMPLETE) to `base`, atomically."""
    import torch
    from transformers import Qwen2ForCausalLM

    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)
    tmp = Path(tempfile.mkdtemp(prefix=".toy-build-", dir=base.parent))
    print(f"building the toy models into {base} (once; 291 s measured on 2 idle cores)", flush=True)
    try:
        tok = build_tokenizer(tmp / "_tokenizer", extra_docs=tokenizer_docs())
        enc = Encoder(tok)
        train = arith.generate(N_TRAIN, seed=SEED, min_ops=MIN_OPS, max_ops=MAX_OPS, split="train")
        examples = [(enc.prompt(p.text), enc.solution(p.steps())) for p in train]
        models = {}
        torch.manual_seed(SEED)
        models["small"] = Qwen2ForCausalLM(model_config("small", tok))
        train_lm(models["small"], examples, *TRAIN["small"], SEED + 10, desc="small")
        # One big run: pi_B is its snapshot at BIG_SNAPSHOT steps (headroom for the methods); the PRM is the run's
        # final weights as they are, a verifier LM (the `lm_verifier` reward adapter: a step's reward is the lowest
        # probability it gives any token of the step). As in the papers, the PRM comes from pi_B's family and
        # knows more arithmetic than pi_B; no PRM training at all (the README's toy section says why).
        torch.manual_seed(SEED + 1)
        run = Qwen2ForCausalLM(model_config("big", tok))
        models["big"] = train_lm(run, examples, *TRAIN["big"], SEED + 10, desc="big", snapshot_at=BIG_SNAPSHOT)
        models["reward"] = run
        _save(tmp, tok, models, t0)
        if base.exists():
            shutil.rmtree(base)
        os.replace(tmp, base)
    finally:
        torch.set_num_threads(threads)
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _save(tmp: Path, tok, models, t0: float) -> None:
    import torch
    from transformers import GenerationConfig

    for role, model in models.items():
        out = tmp / role
        model.to(torch.float32).save_pretrained(out, safe_serialization=True)
        tok.save_pretrained(out)
        GenerationConfig(eos_token_id=[tok.eos_token_id], pad_token_id=tok.pad_token_id,
                         do_sample=True, temperature=0.7).save_pretrained(out)
    shutil.rmtree(tmp / "_tokenizer")
    info = {"fingerprint": fingerprint(tmp), "build_s": round(time.perf_counter() - t0, 1),
            "load_avg": os.getloadavg()[0], "params": {r: sum(p.numel() for p in m.parameters())
                                                       for r, m in models.items()}}
    (tmp / "build.json").write_text(json.dumps(info, indent=2) + "\n")
    (tmp / "COMPLETE").write_text(info["fingerprint"] + "\n")
