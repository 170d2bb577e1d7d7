"""The toy world's three trained models (`model=toy`): small Qwen2 models with real, separated skill on
`dataset=arith` (gsi/data/arith.py, 2-6 operations), built in code from fixed seeds on first use and cached like the
tiny models; the PRM is a verifier LM (the big run's end, read by the `lm_verifier` adapter). Measured numbers: the README's toy section (`python -m gsi.models.toy --eval 200 --json`).

The recipe (sizes, seeds, data layout, PRM labels): gsi/models/toy_recipe.py; training and the build:
gsi/models/toy_train.py; measurements: gsi/models/toy_eval.py. Built once into GSI_CACHE_DIR/toy-<TOY_VERSION>
(a lock makes concurrent first uses wait for one build).

    python -m gsi.models.toy                    # build (if needed), print paths, fingerprint and build time
    python -m gsi.models.toy --eval 200 --json  # one JSON object: greedy_small, greedy_big (and by number of
                                                 # operations), prm_auc_paired, prm_auc_samples,
                                                 # prm_step_index_corr(_computing), build_s, fingerprint,
                                                 # ... (also `python -m gsi.engines.toy`, the same CLI)
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from gsi.data import arith
from gsi.models.toy_eval import auc, prm_auc, prm_scores, sample
from gsi.models.tiny import build_once
from gsi.models.toy_recipe import MAX_OPS, MIN_OPS, ROLES, THREADS, Encoder, toy_dir
from gsi.models.toy_train import build


def toy_paths(root: Path | None = None) -> dict[str, Path]:
    """Build the toy models unless they are already cached; return {role: path}."""
    base = toy_dir(root)
    build_once(base, build)
    return {role: base / role for role in ROLES}


def evaluate(n: int = 200, seed: int = 0) -> dict:
    """The toy world's skill on n held-out problems of the default difficulty range (transformers, no engines).

    greedy_small, greedy_big: greedy accuracy (and by number of operations); the PRM's scores are the verifier's
    (gsi.models.toy_eval.prm_scores, what the engine's lm_verifier reward gives); prm_auc_paired: its AUC on
    held-out twins (each problem's correct solution and a corrupted one, the step that goes wrong against the
    correct step at the same index: the index carries nothing); prm_auc_samples: its AUC against the checker on
    pi_S's own sampled steps (T = 0.7), with the one-sided Mann-Whitney p that correct steps do not score higher;
    prm_step_index_corr: Spearman's correlation of its score with the step index on the correct steps of pi_S's
    samples, and prm_step_index_corr_computing the same without the boxed answers (near 0 for a PRM that checks;
    the boxed step is a copy the verifier is surer of, and always last); build_s and fingerprint from the build.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(THREADS)
    paths = toy_paths()
    tok = AutoTokenizer.from_pretrained(paths["small"])
    enc = Encoder(tok)
    problems = arith.generate(n, seed=seed, min_ops=MIN_OPS, max_ops=MAX_OPS, split="test")
    small = AutoModelForCausalLM.from_pretrained(paths["small"]).eval()
    big = AutoModelForCausalLM.from_pretrained(paths["big"]).eval()
    prm = AutoModelForCausalLM.from_pretrained(paths["reward"]).eval()  # the verifier (lm_verifier adapter)
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
    out.update(prm_auc(prm, small, enc, problems))
    info = json.loads((toy_dir() / "build.json").read_text())
    out.update(build_s=info["build_s"], fingerprint=info["fingerprint"])
    return out


def main() -> None:
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


if __name__ == "__main__":
    main()
