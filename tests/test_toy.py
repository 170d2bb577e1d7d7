"""The toy world without engines: dataset=arith (generation, split, checker, registry) and model=toy's config."""

from __future__ import annotations

import random

import pytest

from gsi import arith


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
    from gsi.engines import toy

    train = {p.text for p in arith.generate(toy.N_TRAIN, seed=toy.SEED, min_ops=toy.MIN_OPS, max_ops=toy.MAX_OPS,
                                            split="train")}
    for seed in (0, 1, 7):
        test = arith.generate(500, seed=seed, min_ops=1, max_ops=6, split="test")
        assert not {p.text for p in test} & train
        assert all(arith.split_of(p.text) == "test" for p in test)


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
    from gsi.config import compose_config
    from gsi.engines import toy

    cfg = compose_config("+experiment=toy_demo")
    assert cfg.model.system_prompt == toy.SYSTEM_PROMPT
    assert cfg.dataset.min_ops == toy.MIN_OPS and cfg.dataset.max_ops == toy.MAX_OPS
    assert {cfg.model[r].path for r in toy.ROLES} == {f"toy://{r}" for r in toy.ROLES}


def test_unknown_toy_role_is_a_config_error():
    from gsi.engines.registry import ConfigError, resolve_model_path

    with pytest.raises(ConfigError, match="model.small.path.*unknown toy model 'medium'"):
        resolve_model_path("toy://medium", "model.small.path")


def test_auc():
    from gsi.engines.toy import auc

    assert auc([0.1, 0.2, 0.8, 0.9], [False, False, True, True]) == 1.0
    assert auc([0.9, 0.8, 0.2, 0.1], [False, False, True, True]) == 0.0
    assert auc([0.5, 0.5], [True, False]) == 0.5


def test_toy_models_have_separated_skill():
    """The issue's skill targets, measured on 200 held-out problems with transformers (no engines): greedy pi_B at
    least 30 points above greedy pi_S, and the PRM's verdicts on pi_S's own samples better than chance (one-sided
    Mann-Whitney on correct vs wrong steps, and an AUC of at least 0.75). Builds the toy models on first use."""
    pytest.importorskip("transformers")
    from gsi.engines import toy

    m = toy.evaluate(200)
    print(m)
    assert m["greedy_big"] - m["greedy_small"] >= 0.30, m
    assert m["steps_correct"] >= 50 and m["steps_wrong"] >= 50, m  # pi_S's samples hold both kinds of step
    assert m["prm_auc_small_samples"] >= 0.75 and m["prm_auc_p"] < 1e-3, m


def test_empty_system_prompt_means_no_system_turn(tmp_path):
    """model=toy has no system prompt: the rendered prompt has no system turn (as the PRM adapters render it),
    and a dataset instruction alone becomes the system prompt without a stray space."""
    pytest.importorskip("transformers")
    from gsi.engines.tiny import build_tokenizer
    from gsi.prompts import render_prompt, system_prompt

    tok = build_tokenizer(tmp_path / "tok")
    bare = tok.decode(render_prompt(tok, "", "Compute 47+8."))
    assert bare == "<|im_start|>user\nCompute 47+8.<|im_end|>\n<|im_start|>assistant\n"
    assert "<|im_start|>system\nBe brief.<|im_end|>\n" in tok.decode(render_prompt(tok, "Be brief.", "Compute 47+8."))
    assert system_prompt("", "Box it.") == "Box it." and system_prompt("Be brief.", None) == "Be brief."
    assert system_prompt("Be brief.", "Box it.") == "Be brief. Box it."
