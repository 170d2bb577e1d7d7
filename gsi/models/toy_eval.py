"""Measuring the toy models with transformers (no engines): sampled solutions, greedy accuracy, the verifier PRM's
step scores and their AUC against the checker.
"""

from __future__ import annotations

from gsi.data import arith
from gsi.models.tiny import DELIMITER
from gsi.models.toy_recipe import Encoder


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
    """The verifier PRM's reward of every step (a causal LM, the `lm_verifier` adapter's read-out): what
    gsi.engines.verifier computes with vLLM, one request per step, here in one transformers forward pass over the
    whole solution (causal: step k's log-probs do not depend on the steps after it; tests/test_toy.py checks
    that the two agree)."""
    import torch

    x = enc.prm(problem, steps)
    ids = torch.tensor([x.token_ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), dim=-1)
    # token_logp[pos] = log p(token at pos | tokens before it)
    token_logp = [0.0] + logp.gather(1, ids[0, 1:, None])[:, 0].tolist()
    scores, start = [], x.prompt_len
    for end in x.step_ends:
        scores.append(enc.adapter.score_rows(token_logp[start : end + 1]))
        start = end + 1
    return scores


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


def prm_auc(prm, small, enc: Encoder, problems: list[arith.ArithProblem], seed: int = 1) -> dict:
    """The PRM's step verdicts against the checker's on pi_S's samples (T = 0.7): prm_auc_samples (AUC),
    steps_correct, steps_wrong, prm_auc_samples_p (one-sided Mann-Whitney p that correct steps do not score higher),
    and Spearman's correlation of the score with the step index over the correct steps: prm_step_index_corr over
    all of them, prm_step_index_corr_computing over the steps that compute ("55+3=58"), without the boxed answer.
    The boxed step only copies the last value, so the verifier is surer of it than of any sum, and it is always the
    last: over all steps that alone makes the score rise with the index."""
    from scipy.stats import mannwhitneyu, spearmanr

    sols = sample(small, enc, [p.text for p in problems], greedy=False, seed=seed)
    scores, labels, index, computing = [], [], [], []
    for p, steps in zip(problems, sols):
        if not steps:
            continue
        scores += prm_scores(prm, enc, p.text, steps)
        labels += arith.check_steps(p, steps)
        index += range(len(steps))
        computing += [not arith.is_answer_step(s) for s in steps]
    pos = [s for s, l in zip(scores, labels) if l]
    neg = [s for s, l in zip(scores, labels) if not l]

    def index_corr(keep: list[bool]) -> float:
        xs = [(i, s) for i, s, l, k in zip(index, scores, labels, keep) if l and k]
        return float(spearmanr(*zip(*xs)).correlation) if len(xs) > 2 else float("nan")

    return {"prm_auc_samples": auc(scores, labels), "steps_correct": len(pos), "steps_wrong": len(neg),
            "prm_auc_samples_p": float(mannwhitneyu(pos, neg, alternative="greater").pvalue) if pos and neg
            else float("nan"),
            "prm_step_index_corr": index_corr([True] * len(scores)),
            "prm_step_index_corr_computing": index_corr(computing)}
