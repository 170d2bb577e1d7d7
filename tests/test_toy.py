"""The toy world without engines: dataset=arith (generation, split, checker, registry) and model=toy's config."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from gsi.data import arith

ROOT = Path(__file__).resolve().parents[1]


def test_problems_are_seeded_distinct_and_solved_step_by_step():
    a = arith.generate(300, seed=3, min_ops=2, max_ops=5)
    assert a == arith.generate(300, seed=3, min_ops=2, max_ops=5)
    assert a != arith.generate(300, seed=4, min_ops=2, max_ops=5)
    assert len({p.text for p in a}) == 300
    assert {len(p.ops) for p in a} == {2, 3, 4, 5}
    for p in a:
        steps = p.solution.split(arith.DELIMITER)
        assert len(steps) == len(p.ops) + 1 and steps[-1] == f"\\boxed{{{p.answer}}}"
        assert all(arith.LOW <= v <= arith.HIGH for v in p.values())
        assert arith.check_steps(p.text, steps) == [True] * len(steps)
        assert arith.parse_problem(p.text) == p


def test_held_out_problems_never_among_training_problems():
    from gsi.models import toy_recipe as recipe

    train = {p.text for p in arith.generate(recipe.N_TRAIN, seed=recipe.SEED, min_ops=recipe.MIN_OPS,
                                            max_ops=recipe.MAX_OPS, split="train")}
    for seed in (0, 1, 7):
        test = arith.generate(500, seed=seed, min_ops=1, max_ops=6, split="test")
        assert not {p.text for p in test} & train
        assert all(p.split == "test" for p in test)


def test_checker_flags_exactly_the_wrong_step():
    p = arith.parse_problem("Compute 47+8-3+9.")
    good = ["47+8=55", "55-3=52", "52+9=61", "\\boxed{61}"]
    assert arith.check_steps(p, good) == [True, True, True, True]
    # a carry slip in step 1; the later steps follow correctly from what it wrote
    assert arith.check_steps(p, ["47+8=45", "45-3=42", "42+9=51", "\\boxed{51}"]) == [False, True, True, True]
    assert arith.check_steps(p, ["47+8=55", "55+9=64", "\\boxed{64}"]) == [True, False, False]  # skipped op
    assert arith.check_steps(p, ["47+8=55", "54-3=51"]) == [True, False]  # wrong copy
    assert arith.check_steps(p, ["\\boxed{61}"]) == [False]  # early answer
    assert arith.check_steps(p, good + ["61+0=61"]) == [True] * 4 + [False]  # anything after the answer
    assert arith.check_steps(p, ["so 47 plus 8 is 55"]) == [False]


def test_corruptions_have_one_wrong_step():
    rng = random.Random(0)
    for p in arith.generate(200, seed=1):
        steps, labels = arith.corrupt(p, rng)
        assert labels.count(False) == 1, (p.text, steps, labels)


def test_twins_are_wrong_at_every_step_index_about_half_the_time():
    """The PRM's corrupted twins: each step wrong with probability 1/2 whatever its index, each step following
    from what the one before wrote (so the checker flags exactly the steps that slipped)."""
    rng = random.Random(0)
    by_index: dict[int, list[bool]] = {}
    for p in arith.generate(600, seed=2, min_ops=2, max_ops=6):
        steps, labels = arith.corrupt_each(p, rng)
        assert len(steps) == len(p.ops) + 1 and labels == arith.check_steps(p, steps)
        for k, ok in enumerate(labels):
            by_index.setdefault(k, []).append(ok)
    for k in range(4):
        assert 0.4 < sum(by_index[k]) / len(by_index[k]) < 0.6, (k, sum(by_index[k]), len(by_index[k]))


def test_dataset_registry_and_config(make_cfg):
    from gsi.data import load_problems

    cfg = make_cfg("dataset=arith", "dataset.n_problems=50", "dataset.min_ops=3", "dataset.max_ops=3",
                   "dataset.limit=20", "dataset.offset=5")
    problems = load_problems(cfg.dataset)
    assert len(problems) == 20 and problems[0].id == "arith-0-5"
    assert all(len(arith.parse_problem(p.problem).ops) == 3 for p in problems)
    assert all(p.reference == str(arith.parse_problem(p.problem).answer) for p in problems)
    assert [p.id for p in load_problems(cfg.dataset, shard="1/2")] == [p.id for p in problems[1::2]]
    with pytest.raises(Exception, match="n_problemz"):
        make_cfg("dataset=arith", "dataset.n_problemz=5")


def test_toy_model_config_matches_training():
    """The system prompt the toy models were trained with is the one model=toy renders."""
    from gsi.config.schema import compose_config
    from gsi.models import toy_recipe as recipe

    cfg = compose_config("+experiment=toy_demo")
    assert cfg.model.system_prompt == recipe.SYSTEM_PROMPT
    assert cfg.dataset.min_ops == recipe.MIN_OPS and cfg.dataset.max_ops == recipe.MAX_OPS
    assert {cfg.model[r].path for r in recipe.ROLES} == {f"toy://{r}" for r in recipe.ROLES}


def test_unknown_toy_role_is_a_config_error():
    from gsi.engines.resolve import ConfigError, resolve_model_path

    with pytest.raises(ConfigError, match="model.small.path.*unknown toy model 'medium'"):
        resolve_model_path("toy://medium", "model.small.path")


def test_auc():
    from gsi.models.toy_eval import auc

    assert auc([0.1, 0.2, 0.8, 0.9], [False, False, True, True]) == 1.0
    assert auc([0.9, 0.8, 0.2, 0.1], [False, False, True, True]) == 0.0
    assert auc([0.5, 0.5], [True, False]) == 0.5


def test_prm_labels_sit_where_the_adapter_reads(tmp_path):
    """bench/toy_prm_probe.py's trained PRM learns at exactly the positions a token_classification adapter reads
    at inference (each step's delimiter, in the ids the engine sends for steps[:k+1]; the verifier's layout is the
    same), with the checker's verdict there, and on every token before it whether the step so far is a prefix of
    the correct step."""
    pytest.importorskip("transformers")
    from gsi.engines.base import RewardRequest
    from gsi.models import toy_recipe as recipe
    from gsi.models.tiny import build_tokenizer

    tok = build_tokenizer(tmp_path / "tok", extra_docs=recipe.tokenizer_docs()[:200])
    enc = recipe.Encoder(tok)
    p = arith.parse_problem("Compute 47+8+8.")
    steps = ["47+8=45", "45+8=53", "\\boxed{53}"]  # a carry slip, then correct steps from what it wrote
    x = enc.prm(p.text, steps)
    for k in range(len(steps)):
        y = enc.adapter.build(RewardRequest(problem=p.text, steps=steps[: k + 1]))
        assert y.token_ids == x.token_ids[: x.step_ends[k] + 1] and y.step_ends[-1] == x.step_ends[k]
    labels = recipe.step_labels(tok, p, steps, x)
    at_delimiter = [(pos, lab) for pos, lab, w in labels if pos in x.step_ends]
    assert at_delimiter == list(zip(x.step_ends, arith.check_steps(p, steps))) == list(zip(x.step_ends,
                                                                                           [False, True, True]))
    first = [tok.decode([x.token_ids[pos]]) + ("+" if lab else "-") for pos, lab, w in labels
             if pos not in x.step_ends][:7]
    assert first == ["4+", "7+", "++", "8+", "=+", "4-", "5-"]  # wrong from the first digit that departs


@pytest.fixture(scope="module")
def toy_skill():
    """The toy world measured once per module on 200 held-out problems (transformers, no engines), by the command
    a user runs (`python -m gsi.engines.toy --eval 200 --json`, one subprocess). Builds the toy models on first
    use."""
    pytest.importorskip("transformers")
    out = subprocess.run([sys.executable, "-m", "gsi.engines.toy", "--eval", "200", "--json"], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    m = json.loads(out.stdout)
    print(m)
    return m


@pytest.mark.toy
def test_toy_cli_prints_one_json_object_with_the_issues_keys(toy_skill):
    keys = {"greedy_small", "greedy_big", "prm_auc_paired", "prm_auc_samples", "prm_step_index_corr", "build_s",
            "fingerprint"}
    assert keys <= toy_skill.keys(), keys - toy_skill.keys()
    assert toy_skill["n"] == 200 and len(toy_skill["fingerprint"]) == 64 and toy_skill["build_s"] > 0


@pytest.mark.toy
def test_toy_models_have_separated_skill(toy_skill):
    """The difficulty dial: greedy pi_B in 55-85% on the default held-out range, greedy pi_S at least 25 points
    under it, pi_S's samples holding both right and wrong steps."""
    m = toy_skill
    assert 0.55 <= m["greedy_big"] <= 0.85, m
    assert m["greedy_big"] - m["greedy_small"] >= 0.25, m
    assert m["steps_correct"] >= 50 and m["steps_wrong"] >= 50, m


@pytest.mark.toy
def test_greedy_big_falls_with_the_number_of_operations(toy_skill):
    """The dial turns: every step finds its own operand, so pi_B's whole solutions get rarer with the length (v5
    build, 200 problems: 85%, 74%, 63%, 75%, 50% for 2-6 operations; 84%, 72%, 66%, 62%, 55% on 1,000)."""
    from gsi.models import toy_recipe as recipe

    by_ops = {int(k): v for k, v in toy_skill["greedy_big_by_ops"].items()}  # JSON keys are strings
    assert by_ops[recipe.MIN_OPS] > by_ops[recipe.MAX_OPS] + 0.10, by_ops


@pytest.mark.toy
def test_toy_prm_checks_the_arithmetic(toy_skill):
    """AUC >= 0.90 on held-out twins at the same step index (the index carries nothing) and >= 0.85 on pi_S's own
    samples. The PRM is the verifier LM (lm_verifier; v5 build, 200 problems: 1.00 and 0.998, every wrong step but
    two under 2e-3); tests/test_toy_claims.py checks that the engine gives the scores measured here."""
    m = toy_skill
    assert m["prm_auc_paired"] >= 0.90, m
    assert m["prm_auc_samples"] >= 0.85 and m["prm_auc_samples_p"] < 1e-3, m


@pytest.mark.toy
def test_toy_prm_score_does_not_follow_the_step_index(toy_skill):
    """Issue 21's target: on pi_S's correct steps that compute, the verifier's score hardly follows the step index
    (|Spearman| < 0.3; v5 build, 200 problems: 0.06 over 476 steps), so its verdicts come from the arithmetic, not
    from where a step stands."""
    assert abs(toy_skill["prm_step_index_corr_computing"]) < 0.3, toy_skill


@pytest.mark.toy
@pytest.mark.xfail(strict=True, reason="measured on the v5 build (200 problems): Spearman 0.49 over all of pi_S's "
                                       "correct steps, 0.06 without the boxed answers. The boxed step only copies "
                                       "the last value: its lowest token log-prob is -4e-5 at the median against "
                                       "-3e-4 to -4e-4 for the sums at every index, and it always comes last. "
                                       "Strict, so that a change in this figure is noticed")
def test_toy_prm_score_over_all_steps_does_not_follow_the_step_index(toy_skill):
    """The same over every correct step, the boxed answers included (the figure issue 21 asked to report)."""
    assert abs(toy_skill["prm_step_index_corr"]) < 0.3, toy_skill


def test_empty_system_prompt_means_no_system_turn(tmp_path):
    """model=toy has no system prompt: the rendered prompt has no system turn (as the PRM adapters render it),
    and a dataset instruction alone becomes the system prompt without a stray space."""
    pytest.importorskip("transformers")
    from gsi.models.tiny import build_tokenizer
    from gsi.data.prompts import render_prompt, system_prompt

    tok = build_tokenizer(tmp_path / "tok")
    bare = tok.decode(render_prompt(tok, "", "Compute 47+8."))
    assert bare == "<|im_start|>user\nCompute 47+8.<|im_end|>\n<|im_start|>assistant\n"
    assert "<|im_start|>system\nBe brief.<|im_end|>\n" in tok.decode(render_prompt(tok, "Be brief.", "Compute 47+8."))
    assert system_prompt("", "Box it.") == "Box it." and system_prompt("Be brief.", None) == "Be brief."
    assert system_prompt("Be brief.", "Box it.") == "Be brief. Box it."
