"""The RSD paper's own settings on exact-table engines: greedy draft and target, and the RSD code's run-global
patience (rsd-reference.md §1: after patience - 1 rounds in a row in which no problem finished, every unfinished
problem takes one more step and ends), refused where the batch cannot hold every problem."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf

from gsi.config.schema import RSDConfig, compose_config
from gsi.config.validate import problems
from gsi.engines.table import table_engines
from gsi.methods import build_method, method_class
from gsi.methods.base import StepContext
from gsi.runtime.scheduler import run_steps
from gsi.runtime.state import STOP_PATIENCE, ProblemState

PI_S = np.array([0.1, 0.2, 0.3, 0.4])
PI_B = np.array([0.4, 0.3, 0.2, 0.1])
R = np.array([0.9, 0.2, 0.5, 0.8])


def run_rsd(cfg: RSDConfig, *, problems: int, max_steps: int = 50, eos_step=None, pi_s=PI_S, pi_b=PI_B, seed=0):
    engines = table_engines(pi_s, pi_b, R, eos_step=eos_step)
    ctx = StepContext(seed=seed, max_step_tokens=8, max_steps=max_steps, window=10_000, trace=True)
    method = build_method(OmegaConf.structured(cfg), engines, ctx)
    states = [ProblemState(index=i, id=f"p{i}", problem="x", reference="0", prompt_ids=[0], context=[0])
              for i in range(problems)]
    rounds = []  # the problems still running at each round
    run_steps(states, method, ctx, batch_size=problems, on_finish=lambda s, t: None,
              on_round=lambda live: rounds.append(len(live)))
    return states, rounds


def test_greedy_draft_and_target_are_each_models_argmax():
    # delta between r(argmax pi_S) = 0.8 and 1: every greedy draft (type 3) is rejected, every target step is
    # pi_B's argmax (type 0); sampled drafts would show other types.
    states, _ = run_rsd(RSDConfig(beta=1.0, delta=0.85, greedy=True), problems=50, max_steps=4)
    for s in states:
        assert [st.source for st in s.steps] == ["big"] * 4
        assert all(st.token_ids == (0,) for st in s.steps)
        assert all(t["candidates"][0]["tokens"] == 1 and t["candidates"][0]["r"] == R[3] for t in s.trace)
    accepted, _ = run_rsd(RSDConfig(beta=1.0, delta=0.7, greedy=True), problems=20, max_steps=3)
    assert all(st.token_ids == (3,) and st.source == "small" for s in accepted for st in s.steps)
    sampled, _ = run_rsd(RSDConfig(beta=1.0, delta=0.7, greedy=False), problems=50, max_steps=3)
    assert len({st.token_ids for s in sampled for st in s.steps}) > 1


def test_greedy_with_several_samples_is_refused():
    """gsi.config.validate's rule (its one home), before any engine starts."""
    for n, n_big in ((4, 1), (1, 4)):
        errors = problems(compose_config("method=rsd", "method.greedy=true", f"method.n={n}", f"method.n_big={n_big}"))
        assert any(e.startswith("method.greedy=true") for e in errors), errors
    assert not problems(compose_config("method=rsd", "method.greedy=true", "method.n=1", "method.n_big=1"))


@pytest.mark.parametrize("patience", [1, 3, 5])
def test_patience_ends_every_problem_after_patience_rounds_without_a_finish(patience):
    # No problem can finish on its own (no EOS, max_steps far away): the RSD code's counter reaches patience - 1
    # after patience - 1 rounds, and the next round (the patience-th) is every problem's last.
    states, rounds = run_rsd(RSDConfig(beta=1.0, delta=0.7, patience=patience), problems=6, max_steps=50)
    assert [len(s.steps) for s in states] == [patience] * 6
    assert {s.stop_reason for s in states} == {STOP_PATIENCE}
    assert rounds == [6] * patience


def simulate_patience(natural_finish: list[int | None], patience: int, max_rounds: int) -> list[int]:
    """The RSD code's loop (main_online.py get_responses) on known natural finishing rounds: each problem's number
    of steps."""
    steps = [None] * len(natural_finish)
    unchanged, finished_before = 0, 0
    for k in range(max_rounds):
        for i, f in enumerate(natural_finish):
            if steps[i] is None and ((f is not None and f == k) or unchanged >= patience - 1):
                steps[i] = k + 1
        finished = sum(s is not None for s in steps)
        unchanged = 0 if finished > finished_before else unchanged + 1
        finished_before = finished
        if finished == len(steps):
            break
    return steps


@pytest.mark.parametrize("seed", range(4))
def test_patience_follows_the_rsd_codes_counter_with_natural_finishes(seed):
    # Step type 0 is EOS (drawn now and then), so problems finish at scattered rounds and reset the counter.
    patience = 3
    pi = np.array([0.12, 0.28, 0.3, 0.3])
    states, _ = run_rsd(RSDConfig(beta=1.0, delta=0.7, patience=patience), problems=12, max_steps=60, eos_step=0,
                        pi_s=pi, pi_b=pi, seed=seed)
    natural = [len(s.steps) - 1 if s.stop_reason != STOP_PATIENCE else None for s in states]
    want = simulate_patience(natural, patience, 60)
    assert [len(s.steps) for s in states] == want
    # a patience stop happens only where the code's counter says so (and it does happen in these seeds)
    assert any(s.stop_reason == STOP_PATIENCE for s in states) or all(n is not None for n in natural)


def test_patience_needs_every_problem_in_one_batch():
    cfg = OmegaConf.structured(RSDConfig(patience=5))
    with pytest.raises(ValueError, match=r"batch_size=64 < 100 problems"):
        method_class("rsd").check_run(cfg, n_problems=100, batch_size=64)
    method_class("rsd").check_run(cfg, n_problems=64, batch_size=64)
    method_class("rsd").check_run(OmegaConf.structured(RSDConfig(patience=0)), n_problems=100, batch_size=64)


def test_run_refuses_patience_with_a_small_batch_before_engines_start(make_cfg, tmp_path, monkeypatch):
    from gsi import run as run_mod

    cfg = make_cfg("model=tiny", "hardware=cpu", "method=rsd", "method.patience=5", "dataset=math500",
                   "dataset.limit=3", "batch_size=2")
    monkeypatch.setattr("gsi.engines.registry.build_engines",
                        lambda *a, **k: pytest.fail("engines started before the batch check"))
    with pytest.raises(ValueError, match="batch_size=2"):
        run_mod.run(cfg, out=tmp_path)
    assert not (tmp_path / "results.jsonl").exists() or not (tmp_path / "results.jsonl").read_text()
