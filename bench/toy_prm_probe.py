"""Probe a toy PRM recipe in plain torch, in minutes, before touching the build (issue 21: a PRM that checks).

Trains one `Qwen2ForTokenClassification` on fresh twins every batch (a training problem's correct solution and a
copy whose every step is wrong with probability 1/2, so the step index carries nothing) and prints, every
--eval-every steps, the AUC on held-out twins at the same step index (the issue's `prm_auc_paired`, as
gsi.models.toy.evaluate measures it) and the AUC of the per-token labels on held-out twins.

    python bench/toy_prm_probe.py --steps 600 --lr 1e-3 --layers 3                  # from scratch
    python bench/toy_prm_probe.py --init final --layers 5 --prev-head 40 --window 8 --labels local --lr 3e-3

Recipes (the README's toy section has what each gave):
- --init scratch | final: random weights, or the big run's final weights (the build's reward model, the verifier
  LM at ~98% greedy: its embeddings and 3 layers; the v3 build's PRM backbone) under --layers - 3 new layers,
  frozen for --freeze-steps steps;
- --labels prefix | local: per-token labels "the step so far is a prefix of the correct step" (the v3 build's), or
  "this token is what correct arithmetic on the written prefix gives" (local to one token: the LM's next-token
  check), beside the checker's verdict at each step's delimiter (where the token_classification adapter reads);
- --lm W: an LM loss (weight W, a throw-away head) on the correct twins beside the labels;
- --prev-head S: layer 3's attention starts on the previous position (RoPE phases set by the q/k biases, scale S),
  so a token can read the backbone's prediction made at the token before it;
- --window K: layer 4's attention starts on the last K positions (a step's tokens, read from its delimiter);
- --numbers: a toy tokenizer with one token per number (47, not 4 7) instead of the toy models' digits.

The tokenizer is the toy build's (`python -m gsi.models.toy` builds it); one torch thread, fixed seeds. The
trained PRM was dropped from the build for a verifier LM (gsi.engines.verifier): this probe keeps the record of why.
"""

from __future__ import annotations

import argparse
import math
import random
import re
import sys
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from gsi.data import arith  # noqa: E402
from gsi.models.toy_eval import auc  # noqa: E402
from gsi.models.toy_recipe import Encoder, step_labels, toy_dir  # noqa: E402


class NumberEncoder:
    """The adapter's layout (prompt, each step, its delimiter) with one token per number."""

    VOCAB = ["<pad>", "<user>", "<assistant>", "Compute", ".", "+", "-", "=", "\\boxed{", "}", "\n\n"] + [
        str(i) for i in range(0, 220)]

    def __init__(self):
        self.index = {t: i for i, t in enumerate(self.VOCAB)}

    def encode(self, text: str) -> list[int]:
        return [self.index[t] for t in re.findall(r"\d+|\\boxed\{|[+\-=.}]|Compute|\n\n", text)]

    def prm(self, problem: str, steps: list[str]):
        ids = [self.index["<user>"]] + self.encode(problem) + [self.index["<assistant>"]]
        prompt_len, ends = len(ids), []
        for s in steps:
            ids += self.encode(s)
            ends.append(len(ids))
            ids.append(self.index["\n\n"])
        return SimpleNamespace(token_ids=ids, step_ends=ends, prompt_len=prompt_len)


def local_labels(encode, p: arith.ArithProblem, steps: list[str], x) -> list[tuple[int, bool, float]]:
    """Per token: is it what correct arithmetic on the written prefix gives (a: the previous step's written
    result; the operator and operand: the problem's; the result: the written operands' result). The delimiter:
    the checker's verdict."""
    verdicts = arith.check_steps(p, steps)
    out, prev, start = [], p.start, x.prompt_len
    for k, (s, end) in enumerate(zip(steps, x.step_ends)):
        m = arith._STEP.match(s)
        if k < len(p.ops) and m:
            a, o_w, v_w = int(m.group(1)), m.group(2), int(m.group(3))
            o, v = p.ops[k]
            want = f"{prev}{o}{v}={a + v_w if o_w == '+' else a - v_w}"
            prev = int(m.group(4))
        else:
            want = arith.correct_step(p, k, prev) or ""
        want_ids, got = encode(want), x.token_ids[start:end]
        for j, t in enumerate(got):
            out.append((start + j, len(want_ids) == len(got) and t == want_ids[j], 1.0))
        out.append((end, verdicts[k], 1.0))
        start = end + 1
    return out


def previous_token_head(att, heads: int, head_dim: int, scale: float, theta_base: float = 10000.0) -> None:
    """Make an attention layer attend to the previous position: zero q/k weights, q bias sqrt(scale) on every RoPE
    pair's first half, k bias that pair rotated by one position's angle, so every pair's score peaks at d = 1."""
    import torch

    half = head_dim // 2
    with torch.no_grad():
        att.q_proj.weight.zero_()
        att.k_proj.weight.zero_()
        qb, kb = torch.zeros_like(att.q_proj.bias), torch.zeros_like(att.k_proj.bias)
        for h in range(heads):
            qb[h * head_dim: h * head_dim + half] = scale ** 0.5
        for i in range(half):
            theta = theta_base ** (-2 * i / head_dim)
            kb[i], kb[i + half] = scale ** 0.5 * math.cos(theta), scale ** 0.5 * math.sin(theta)
        att.q_proj.bias.copy_(qb)
        att.k_proj.bias.copy_(kb)


def positional_head(att, heads: int, head_dim: int, scores, theta_base: float = 10000.0) -> None:
    """Make an attention layer purely positional: zero q/k weights, q/k biases whose RoPE phases give
    score(d) = sum_i c_i cos(theta_i d) + s_i sin(theta_i d) for a query d positions after the key, with (c, s)
    fitted by ridge least squares to `scores` (an array over d = 0..len-1)."""
    import numpy as np
    import torch

    half = head_dim // 2
    theta = np.array([theta_base ** (-2 * i / head_dim) for i in range(half)])
    d = np.arange(len(scores))
    basis = np.concatenate([np.cos(np.outer(d, theta)), np.sin(np.outer(d, theta))], 1)
    weight = np.where(scores > scores.min(), 10.0, 1.0)
    bw = basis * weight[:, None]
    coef = np.linalg.solve(bw.T @ bw + np.eye(bw.shape[1]), bw.T @ (scores * weight)) * head_dim ** 0.5
    with torch.no_grad():
        att.q_proj.weight.zero_()
        att.k_proj.weight.zero_()
        qb, kb = torch.zeros_like(att.q_proj.bias), torch.zeros_like(att.k_proj.bias)
        for h in range(heads):
            qb[h * head_dim: h * head_dim + half] = 1.0
        kb[:half], kb[half:head_dim] = torch.tensor(coef[:half]), torch.tensor(coef[half:])
        att.q_proj.bias.copy_(qb)
        att.k_proj.bias.copy_(kb)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--init", choices=("scratch", "final"), default="scratch")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--labels", choices=("prefix", "local"), default="prefix")
    ap.add_argument("--lm", type=float, default=0.0, metavar="W")
    ap.add_argument("--freeze-steps", type=int, default=10**9)
    ap.add_argument("--prev-head", type=float, default=0.0, metavar="S")
    ap.add_argument("--window", type=int, default=0, metavar="K")
    ap.add_argument("--numbers", action="store_true")
    ap.add_argument("--balance", action="store_true", help="weight the wrong labels so both classes weigh the same")
    ap.add_argument("--eval-every", type=int, default=100)
    a = ap.parse_args()

    import numpy as np
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForTokenClassification

    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(toy_dir() / "small")
    if a.numbers:
        enc = NumberEncoder()
        encode, vocab = enc.encode, len(enc.VOCAB)
    else:
        enc = Encoder(tok)
        encode, vocab = (lambda s: tok.encode(s, add_special_tokens=False)), len(tok)

    def example(p, steps):
        x = enc.prm(p.text, steps)
        if a.labels == "local":
            return x.token_ids, local_labels(encode, p, steps, x)
        labels = (step_labels(tok, p, steps, x, encode=enc.encode, token_weight=1.0) if a.numbers
                  else step_labels(tok, p, steps, x))
        return x.token_ids, labels

    train = arith.generate(2400, seed=4321, min_ops=2, max_ops=6, split="train")
    test = arith.generate(200, seed=0, min_ops=2, max_ops=6, split="test")
    rng, pairs = random.Random(0), []
    for p in test:  # the held-out twins: the step that goes wrong against the correct step at its index
        steps, labels = arith.corrupt(p, rng)
        pairs.append((enc.prm(p.text, p.steps()), enc.prm(p.text, steps), labels.index(False)))
    token_set = [example(p, arith.corrupt_each(p, random.Random(p.start))[0]) for p in test[:100]]

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=vocab, hidden_size=a.hidden, num_hidden_layers=a.layers,
                      num_attention_heads=a.heads, num_key_value_heads=1, intermediate_size=4 * a.hidden,
                      max_position_embeddings=2048, max_window_layers=a.layers, tie_word_embeddings=False,
                      bos_token_id=None, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      num_labels=1)
    model = Qwen2ForTokenClassification(cfg)
    backbone = []
    if a.init == "final":
        from safetensors.torch import load_file

        state = {k[len("model."):]: v for k, v in load_file(toy_dir() / "reward" / "model.safetensors").items()
                 if k.startswith("model.") and k != "model.norm.weight"}
        state = {k: v for k, v in state.items() if not k.startswith("layers.") or int(k.split(".")[1]) < 3}
        model.model.load_state_dict(state, strict=False)
        backbone = [p for n, p in model.model.named_parameters() if n in state]
    head_dim = a.hidden // a.heads
    if a.prev_head:
        previous_token_head(model.model.layers[3].self_attn, a.heads, head_dim, a.prev_head)
    if a.window:
        profile = np.where(np.arange(120) <= a.window, 0.0, -12.0)
        positional_head(model.model.layers[4].self_attn, a.heads, head_dim, profile)
    lm_head = torch.nn.Linear(a.hidden, vocab, bias=False)
    params = list(model.parameters()) + (list(lm_head.parameters()) if a.lm else [])
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=0.01, betas=(0.9, 0.98))
    print(f"parameters: {sum(p.numel() for p in model.parameters()):,}", flush=True)

    def pad(rows, v):
        w = max(map(len, rows))
        return torch.tensor([list(r) + [v] * (w - len(r)) for r in rows])

    def score(ids):
        return torch.sigmoid(model(input_ids=torch.tensor([ids])).logits[0, :, 0])

    def evaluate(step):
        model.eval()
        with torch.no_grad():
            good = [score(xg.token_ids)[xg.step_ends[k]].item() for xg, _, k in pairs]
            bad = [score(xb.token_ids)[xb.step_ends[k]].item() for _, xb, k in pairs]
            sc, lb = [], []
            for ids, labels in token_set:
                s = score(ids)
                sc += [s[pos].item() for pos, _, _ in labels]
                lb += [lab for _, lab, _ in labels]
        model.train()
        print(f"step {step}: AUC on held-out twins {auc(good + bad, [True] * len(good) + [False] * len(bad)):.3f}, "
              f"per-token AUC {auc(sc, lb):.3f}", flush=True)

    data_rng, t0 = random.Random(1), time.perf_counter()
    model.train()
    for step in range(a.steps):
        batch = []
        for _ in range(a.batch // 2):
            p = data_rng.choice(train)
            batch += [example(p, p.steps()), example(p, arith.corrupt_each(p, data_rng)[0])]
        ids, mask = pad([e[0] for e in batch], 0), pad([[1] * len(e[0]) for e in batch], 0)
        rows, cols, target = [], [], []
        for b, (_, labels) in enumerate(batch):
            for pos, lab, _ in labels:
                rows.append(b), cols.append(pos), target.append(float(lab))
        warm = max(1, a.steps // 20)
        lr = a.lr * (step + 1) / warm if step < warm else \
            a.lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, a.steps - warm)))
        for g in opt.param_groups:
            g["lr"] = lr
        for p in backbone:
            p.requires_grad_(step >= a.freeze_steps)
        out = model(input_ids=ids, attention_mask=mask, output_hidden_states=bool(a.lm))
        target_t = torch.tensor(target)
        weight = None
        if a.balance:
            n_pos = target_t.sum().clamp(min=1)
            weight = torch.where(target_t > 0, 1.0, n_pos / (len(target) - n_pos).clamp(min=1))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            out.logits[..., 0][torch.tensor(rows), torch.tensor(cols)], target_t, weight=weight)
        if a.lm:  # next-token loss on the correct twins (even rows)
            logits = lm_head(out.hidden_states[-1][0::2, :-1])
            lab = ids[0::2, 1:].clone()
            lab[mask[0::2, 1:] == 0] = -100
            loss = loss + a.lm * torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), lab.reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if (step + 1) % 25 == 0:
            print(f"step {step + 1}: loss {loss.item():.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
        if (step + 1) % a.eval_every == 0:
            evaluate(step + 1)


if __name__ == "__main__":
    main()
