"""The runtime's policies around real engines: the async policy gives lock-step's records on the tiny vLLM models
(tests/test_runtime.py does every method on table engines), roles really working at the same time in threads,
refusals, utilisation and the simulated-GPU clock."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from gsi.config.schema import BaselineConfig, BoNConfig, GSIConfig, RSDConfig
from gsi.engines.table import table_engines
from gsi.methods import build_method
from gsi.methods.base import StepContext
from gsi.runtime.scheduler import step_all
from gsi.runtime.state import ProblemState

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("GSI_DATA_DIR", str(ROOT.parent / "shared" / "data"))

from table_world import PI_B, PI_S, R, TEXTS  # noqa: E402 - the shared exact tables

METHODS = {
    "gsi": GSIConfig(n=4, beta=2.0, threshold=0.6),
    "gsi_no_fallback": GSIConfig(n=4, beta=2.0, threshold=0.6, fallback=False),
    "rsd": RSDConfig(n=1, beta=2.0, delta=0.6),
    "rsd_bon": RSDConfig(n=3, beta=2.0, delta=0.6, n_big=2),
    "bon_small": BoNConfig(n=4, beta=2.0, policy="small"),
    "bon_big_hard": BoNConfig(n=4, beta=2.0, policy="big", selection="hard"),
    "bon_response": BoNConfig(n=3, beta=2.0, level="response", selection="weighted_majority"),
    "baseline": BaselineConfig(n=1, beta=2.0, policy="big"),
}


def states(problems):
    return [ProblemState(index=i, id=f"p{i}", problem="x", reference="1", prompt_ids=[0], context=[0])
            for i in range(problems)]


def run_table(method_cfg, *, mode, max_in_flight=None, problems=40, batch_size=12, engines=None):
    engines = engines or table_engines(PI_S, PI_B, R, eos_step=0, texts=TEXTS)
    ctx = StepContext(seed=7, max_step_tokens=8, max_steps=6, window=10_000, trace=True)
    method = build_method(OmegaConf.structured(method_cfg), engines, ctx)
    todo, finished = states(problems), []
    step_all(todo, method, ctx, batch_size=batch_size, mode=mode, max_in_flight=max_in_flight,
             on_finish=lambda s, t: finished.append(s.index))
    assert sorted(finished) == list(range(problems))  # every problem finishes once
    return todo, finished, engines


class Recording:
    """Wraps table engines: each call takes `delay` seconds, one call at a time per role (like a vLLM engine), and
    its (start, end) is recorded per role."""

    def __init__(self, engines, delay):
        self.intervals: dict[str, list[tuple[float, float]]] = {r: [] for r in ("small", "big", "reward")}
        for role, engine in engines.roles().items():
            lock = threading.Lock()
            for name in ("generate", "score", "reward"):
                if hasattr(engine, name):
                    setattr(engine, name, self._wrap(role, getattr(engine, name), delay, lock))

    def _wrap(self, role, fn, delay, lock):
        def call(*args, **kw):
            with lock:
                t0 = time.perf_counter()
                time.sleep(delay)
                out = fn(*args, **kw)
                self.intervals[role].append((t0, time.perf_counter()))
            return out
        return call

    def overlap_s(self, a: str, b: str) -> float:
        return sum(max(0.0, min(e1, e2) - max(s1, s2)) for s1, e1 in self.intervals[a] for s2, e2 in self.intervals[b])


def test_async_keeps_two_roles_busy_at_once():
    engines = table_engines(PI_S, PI_B, R, eos_step=0, texts=TEXTS)
    rec = Recording(engines, delay=0.01)
    run_table(METHODS["rsd"], mode="async", problems=16, batch_size=8, engines=engines)
    assert rec.overlap_s("small", "reward") > 0.02  # some problems draft while others are scored
    engines = table_engines(PI_S, PI_B, R, eos_step=0, texts=TEXTS)
    rec = Recording(engines, delay=0.01)
    run_table(METHODS["rsd"], mode="lockstep", problems=16, batch_size=8, engines=engines)
    assert rec.overlap_s("small", "reward") == 0.0


def test_gsi_scores_drafts_on_the_prm_and_big_model_at_once():
    engines = table_engines(PI_S, PI_B, R, eos_step=0, texts=TEXTS)
    rec = Recording(engines, delay=0.02)
    run_table(METHODS["gsi"], mode="lockstep", problems=4, batch_size=4, engines=engines)
    assert rec.overlap_s("reward", "big") > 0.02


def test_unknown_scheduler_mode_is_refused():
    with pytest.raises(ValueError, match="scheduler.mode"):
        run_table(METHODS["gsi"], mode="overlap")  # the former cohort scheduler: now `cohorts`


def test_scheduler_config_is_typed(make_cfg):
    cfg = make_cfg("model=tiny", "hardware=cpu", "scheduler.mode=cohorts", "scheduler.max_in_flight=3")
    assert cfg.scheduler.mode == "cohorts" and cfg.scheduler.max_in_flight == 3
    # async on every hardware: where the roles share a device (the CPU), the runtime runs one call at a time
    assert {make_cfg("model=tiny", f"hardware={hw}").scheduler.mode for hw in ("cpu", "gpu1", "gpu3")} == {"async"}
    with pytest.raises(Exception, match="scheduler.mode"):
        make_cfg("model=tiny", "hardware=cpu", "scheduler.mode=sideways")


# ----------------------------------------------------------------------------------------------------------------
# The tiny vLLM models: every method, lock-step against async, through gsi.run.run
# ----------------------------------------------------------------------------------------------------------------
VLLM_METHODS = [
    ["method=gsi", "method.threshold=0.5"],
    ["method=rsd", "method.delta=0.5"],
    ["method=bon", "method.policy=big"],
    ["method=bon", "method.policy=small", "method.level=response", "method.selection=weighted_majority"],
    ["method=baseline", "method.policy=small", "method.greedy=true", "method.n=1"],
]


def _records(out: Path) -> dict[str, dict]:
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return {r["id"]: r for r in rows}


def _close(a, b, path="") -> None:
    """Equal, floats within tolerance (float noise in log-probs and rewards)."""
    if isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-3, abs=2e-3), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


@pytest.mark.vllm
@pytest.mark.parametrize("overrides", VLLM_METHODS, ids=lambda o: "-".join(x.split("=")[1] for x in o[:3]))
def test_async_gives_lockstep_results_on_tiny_vllm(overrides, tiny_engines, tmp_path):
    from gsi.config.schema import compose_config
    from gsi.run import run

    # batch_size=2 and 3 problems in flight under async (lock-step: rounds of 2)
    base = ["model=tiny", "hardware=cpu", "dataset=math500", "dataset.limit=6", "method.n=3",
            "generation.max_steps=3", "generation.max_step_tokens=10", "batch_size=2", "trace=true", *overrides]
    out = {}
    for mode in ("lockstep", "async"):
        cfg = compose_config(*base, f"scheduler.mode={mode}", "scheduler.max_in_flight=3")
        run(cfg, out=tmp_path / mode, engines=tiny_engines)
        out[mode] = _records(tmp_path / mode)
    assert out["lockstep"].keys() == out["async"].keys() and len(out["lockstep"]) == 6
    for pid, rec in out["lockstep"].items():
        other = out["async"][pid]
        assert rec["final_text"] == other["final_text"] and rec["tokens"] == other["tokens"]
        _close({k: v for k, v in rec.items() if k != "time_s"}, {k: v for k, v in other.items() if k != "time_s"})


def test_utilisation_arithmetic():
    from gsi.reporting.utilisation import utilisation

    use = utilisation({"small": {"busy_s": 5.0}, "big": {"busy_s": 8.0}, "reward": {"busy_s": 2.0}}, 10.0,
                      before={"small": {"busy_s": 1.0}, "big": {"busy_s": 0.0}, "reward": {"busy_s": 0.0}})
    assert use["busy_fraction"] == {"small": 0.4, "big": 0.8, "reward": 0.2}
    assert use["busiest_role"] == "big" and use["wall_over_busiest"] == 1.25 and use["wall_over_sum"] == 10 / 14


def test_summary_and_results_table_show_each_roles_busy_fraction(tmp_path, capsys):
    import importlib.util

    from gsi.run import run

    spec = importlib.util.spec_from_file_location("fault_driver", ROOT / "tests" / "fault_driver.py")
    driver = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(driver)
    engines = driver.make_engines()
    run(driver.compose(6), out=tmp_path, engines=engines)
    use = json.loads((tmp_path / "summary.json").read_text())["measured"]["utilisation"]
    assert set(use["busy_fraction"]) == {"small", "big", "reward"}
    for role, frac in use["busy_fraction"].items():
        assert frac == pytest.approx(engines.roles()[role].stats.busy_s / use["wall_s"])
        assert 0 < frac < 1
    assert use["wall_over_busiest"] >= 1.0
    assert "utilisation (step loop)" in capsys.readouterr().out


def test_simulated_gpu_clock_accounts_time_exactly():
    """bench/simgpu.py's virtual-time executor: every wall is at least the busiest role's busy time and below the
    sum; async overlaps the roles, continuous batching is faster still; the same choices
    under every policy."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("simgpu", ROOT / "bench" / "simgpu.py")
    sim = importlib.util.module_from_spec(spec)
    sys.modules["simgpu"] = sim  # (its dataclasses look their module up)
    spec.loader.exec_module(sim)
    kw = dict(problems=12, n=4, max_steps=6)
    lockstep = sim.run_one("gsi", batch_size=6, mode="lockstep", **kw)
    runs = [sim.run_one("gsi", batch_size=6, mode="async", **kw),
            sim.run_one("gsi", batch_size=6, mode="continuous", **kw),
            sim.run_one("gsi", batch_size=12, mode="cohorts", cohorts=2, **kw)]
    for r in [lockstep, *runs]:
        assert max(r["busy_s"].values()) - 1e-9 <= r["wall_s"] < sum(r["busy_s"].values()), r["mode"]
    assert runs[0]["wall_s"] < lockstep["wall_s"]  # pi_S drafts for some problems while pi_B scores others'
    assert runs[1]["wall_s"] < runs[0]["wall_s"]  # decodes no longer wait for a call's longest sample
    assert runs[1]["engine_calls"]["big"] > runs[0]["engine_calls"]["big"]  # requests joined running calls
    assert {r["fingerprint"] for r in [lockstep, *runs]} == {lockstep["fingerprint"]}


def test_iteration_engine_batches_arrivals_into_the_running_decode():
    """bench/simengine.py: a request that arrives while another decodes joins the next iteration (it ends
    before the long one does), and each iteration costs the cost model's time for what it ran."""
    sys.path.insert(0, str(ROOT))
    from bench.simengine import QWEN_7B, IterationEngine

    e = IterationEngine(QWEN_7B)
    e.add(0.0, "long", [(100, 50, 100)], call_overhead=False)
    first = e.peek()
    assert first == pytest.approx(QWEN_7B.step_overhead_s + QWEN_7B.weight_read_s + 100 / QWEN_7B.prefill_tok_s
                                  + QWEN_7B.seq_s)
    assert e.commit() == []
    e.add(first, "short", [(10, 2, 10)], call_overhead=False)
    ended = []
    while e.peek() is not None:
        ended += e.commit()
    assert ended == ["short", "long"]
    # "long": its prompt's iteration, then 49 decode iterations (2 of them beside "short"), one after another
    assert len(e.intervals) == 50 and e.busy == pytest.approx(e.t)
