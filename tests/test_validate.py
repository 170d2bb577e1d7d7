"""One validation pass before anything is written or loaded: fixed-value options are Enums (a typo fails at
composition), and gsi.config.validate's numeric and cross-field rules fail naming the key, through the compose API, the
real CLI (run and sweep) and gsi.run.run, with no engine started and nothing written."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from gsi.config.schema import compose_config
from gsi.config.validate import ConfigInvalid, problems

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# The 16 bad configs (each reached the engines, or composed, before) and the key each must name.
BAD = [
    (["method.n=0"], "method.n"),
    (["method.n=-3"], "method.n"),
    (["beta=-1"], "beta"),  # gsi
    (["method=bon", "beta=-1"], "beta"),  # soft best-of-n would prefer the lowest reward
    (["beta=nan"], "beta"),
    (["batch_size=0"], "batch_size"),
    (["batch_size=-1"], "batch_size"),
    (["generation.max_steps=0"], "generation.max_steps"),
    (["generation.max_step_tokens=0"], "generation.max_step_tokens"),
    (["seed=-1"], "seed"),
    (["method=bon", "method.policy=medium"], "method.policy"),
    (["method.threshold_on=sideways"], "method.threshold_on"),
    (["method=rsd", "method.n_big=0"], "method.n_big"),
    (["method=bon", "method.selection=hardd"], "method.selection"),
    (["shard=5/4"], "shard"),
    (["dataset.limit=-3"], "dataset.limit"),
]
# More of the same kind.
MORE_BAD = [
    (["method.beta=inf"], "method.beta"),
    (["generation.temperature=0"], "generation.temperature"),
    (["method=bon", "method.level=step", "method.selection=majority"], "method.selection"),
    (["method=bon", "method.aggregate=mean"], "method.aggregate"),
    (["method=bon", "method.level=token"], "method.level"),
    (["method=baseline", "method.policy=huge"], "method.policy"),
    (["method=baseline", "method.n=4"], "method.n"),
    (["method=rsd", "method.n=4", "beta=0"], "beta"),
    (["method=rsd", "method.patience=-1"], "method.patience"),
    (["dataset.offset=-2"], "dataset.offset"),
    (["shard=1/0"], "shard"),
    (["shard=a/b"], "shard"),
    (["logger.name=wandbb"], "logger.name"),
    (["model=tiny", "model.small.dtype=bfloat61"], "model.small.dtype"),
    (["model=tiny", "model.reward.adapter=qwen_prn"], "model.reward.adapter"),
]
# The rules the method constructors checked when the engines were already up (gsi.py, rsd.py, beam.py, pf.py),
# and the search methods' options that were plain strings: refused before anything starts now.
METHOD_RULES = [
    (["method=gsi", "beta=0"], "beta"),
    (["method=rsd", "method.greedy=true", "method.n=2"], "method.greedy"),
    (["method=rsd", "method.greedy=true", "method.n_big=3"], "method.greedy"),
    (["method=beam", "method.n=6", "method.width=4"], "method.n"),
    (["method=beam", "method.n=2", "method.width=4"], "method.n"),
    (["method=dvts", "method.width=0"], "method.width"),
    (["method=beam", "method.lookahead=-1"], "method.lookahead"),
    (["method=beam", "method.selection=soft", "beta=-1"], "beta"),
    (["method=beam", "method.policy=medium"], "method.policy"),
    (["method=beam", "method.aggregate=mean"], "method.aggregate"),
    (["method=dvts", "method.selection=best"], "method.selection"),
    (["method=pf", "method.temperature=0"], "method.temperature"),
    (["method=pf", "method.temperature=nan"], "method.temperature"),
    (["method=pf", "method.weighting=softmax"], "method.weighting"),
    (["method=pf", "method.policy=huge"], "method.policy"),
    (["method=pf", "method.selection=first"], "method.selection"),
]
# Values that passed and reached the engines (or a traceback) before, each a meaningless number.
MEANINGLESS = [
    (["grader.timeout=inf"], "grader.timeout"),
    (["grader.timeout=nan"], "grader.timeout"),
    (["grader.timeout=1e7"], "grader.timeout"),
    (["grader.timeout=0"], "grader.timeout"),
    (["grader.timeout=-1"], "grader.timeout"),
    (["dataset.limit=0"], "dataset.limit"),
    (["dataset=arith", "dataset.offset=500"], "dataset.offset"),  # n_problems 500: past the end
    (["dataset=arith", "dataset.n_problems=2", "shard=3/4"], "shard"),
    (["dataset=arith", "dataset.min_ops=5", "dataset.max_ops=2"], "dataset.min_ops"),
    (["dataset=arith", "dataset.max_ops=50"], "dataset.max_ops"),  # a chain of 50 steps leaves 10..99
    (["dataset=arith", "dataset.min_ops=0"], "dataset.min_ops"),
    (["dataset=arith", "dataset.n_problems=100000000"], "dataset.n_problems"),
    (["dataset=arith", "dataset.n_problems=4939", "dataset.min_ops=2", "dataset.max_ops=2"], "dataset.n_problems"),
    (["dataset=arith", "dataset.n_problems=0"], "dataset.n_problems"),
    (["dataset=arith", "dataset.seed=18446744073709551616"], "dataset.seed"),
    (["generation.temperature=1e-300"], "generation.temperature"),
    (["beta=1e308"], "beta"),
    (["beta=-1e7", "method=bon", "method.selection=hard"], "beta"),
    (["method.beta=2e6"], "method.beta"),
    (["seed=18446744073709551616"], "seed"),  # 2**64
    (["seed=9223372036854775808"], "seed"),  # 2**63
    (["model=tiny", "model.small.max_model_len=2"], "model.small.max_model_len"),
]


def rejection(overrides: list[str]) -> str:
    """The error text for `overrides`: from composition (Enums, types) or from gsi.config.validate; '' if accepted."""
    try:
        cfg = compose_config(*overrides)
    except ConfigCompositionException as exc:
        return f"{exc} {exc.__cause__ or ''}"
    return "\n".join(problems(cfg))


def named(text: str, key: str) -> bool:
    """The error is about `key`: Hydra's `full_key: key`, or one of gsi.config.validate's lines (or the CLI's `  - `
    lines) starting with `key=` (Hydra's echo of the override does not count)."""
    lines = [line.strip().removeprefix("- ") for line in text.splitlines()]
    return any(line == f"full_key: {key}" or line.startswith(f"{key}=") for line in lines)


@pytest.mark.parametrize("overrides,key", BAD + MORE_BAD + MEANINGLESS + METHOD_RULES,
                         ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_bad_config_is_refused_naming_its_key(overrides, key):
    start = time.process_time()  # CPU seconds: wall time depends on the machine's load
    text = rejection(overrides)
    assert text, f"{overrides} was accepted"
    assert named(text, key), text
    assert time.process_time() - start < 5


@pytest.mark.parametrize("overrides,key", BAD + MEANINGLESS, ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_bad_config_never_reaches_the_engines_nor_the_folder(overrides, key, tmp_path, monkeypatch):
    """Through gsi.run.run with engines=None: it must refuse before building engines or writing a byte."""
    import gsi.engines.registry as registry
    import gsi.run

    def no_engines(*a, **k):
        raise AssertionError("engines were started for a bad config")

    monkeypatch.setattr(registry, "build_engines", no_engines)
    out = tmp_path / "run"
    try:
        cfg = compose_config("model=tiny", "hardware=cpu", *overrides)
    except ConfigCompositionException:
        return  # refused at composition (an Enum): nothing could run
    with pytest.raises(ConfigInvalid) as info:
        gsi.run.run(cfg, out=out)
    assert named(str(info.value), key)
    assert not out.exists()


@pytest.mark.slow
def test_good_configs_pass():
    """No rule refuses a shipped preset, method or dataset (test_config composes every combination)."""
    for exp in sorted((CONF / "experiment").glob("*.yaml")):
        assert problems(compose_config(f"+experiment={exp.stem}")) == [], exp.stem
    for method in sorted(p.stem for p in (CONF / "method").glob("*.yaml")):
        assert problems(compose_config(f"method={method}")) == [], method
    for dataset in sorted(p.stem for p in (CONF / "dataset").glob("*.yaml")):
        assert problems(compose_config(f"dataset={dataset}", "model=tiny", "hardware=cpu")) == [], dataset
    edge = ["method=bon", "method.selection=hard", "beta=-1"]  # hard selection does not read beta
    assert problems(compose_config(*edge)) == []
    assert problems(compose_config("method=gsi", "method.fallback=false", "method.n_big=0")) == []
    assert problems(compose_config("shard=3/4", "dataset.limit=0", "dataset.allow_empty=true", "seed=0",
                                   "method.threshold_on=score")) == []  # an empty selection, asked for
    assert problems(compose_config("method=beam", "method.n=8", "method.width=4", "method.lookahead=2",
                                   "method.selection=weighted_majority", "method.aggregate=prod")) == []
    assert problems(compose_config("method=pf", "method.weighting=reward", "method.temperature=0.5")) == []
    assert problems(compose_config("method=rsd", "method.greedy=true")) == []  # n = n_big = 1
    assert problems(compose_config("dataset=arith", "dataset.n_problems=4938", "dataset.min_ops=2",
                                   "dataset.max_ops=2", "seed=9223372036854775807", "beta=1e6",
                                   "generation.temperature=0.01", "grader.timeout=600")) == []  # edges accepted


def test_fixed_values_are_checked_without_the_schema_too():
    """A config built without the schema (a plain dict: tests, scripts) gets the Enums' rule from validate."""
    base = {"name": "beam", "n": 4, "width": 2, "lookahead": 0, "policy": "small", "aggregate": "last",
            "selection": "hard", "beta": 1.0}
    assert not [e for e in problems({"method": base}) if e.startswith("method.")]
    for key, bad in (("policy", "medium"), ("aggregate", "mean"), ("selection", "best")):
        text = "\n".join(problems({"method": {**base, key: bad}}))
        assert named(text, f"method.{key}") and "must be one of" in text, text
    gsi = {"name": "gsi", "n": 2, "n_big": 2, "beta": 1.0, "threshold": 0.5, "threshold_on": "sideways"}
    assert named("\n".join(problems({"method": gsi})), "method.threshold_on")


def test_every_problem_is_listed_at_once():
    text = "\n".join(problems(compose_config("batch_size=0", "seed=-1", "method.n=0")))
    assert all(named(text, k) for k in ("batch_size", "seed", "method.n"))


def test_enum_values_behave_as_strings():
    """Methods, JSON and f-strings see the plain values."""
    cfg = compose_config("method=bon", "method.level=response", "method.selection=weighted_majority")
    m = cfg.method
    assert m.policy == "small" and m.selection == "weighted_majority" and m.level in ("step", "response")
    assert f"{m.selection}/{m.aggregate}" == "weighted_majority/last" and str(m.policy) == "small"
    assert {"small": 1}[m.policy] == 1
    data = json.loads(json.dumps(OmegaConf.to_container(cfg, resolve=True)))
    assert data["method"]["selection"] == "weighted_majority"
    assert OmegaConf.to_container(cfg.method, enum_to_str=True)["policy"] == "small"
    assert cfg.hardware.placement == "gpu3" and f"{cfg.hardware.placement}" == "gpu3"


def test_experiment_json_holds_plain_values(tmp_path):
    from gsi.rundir.identity import check_same_experiment

    cfg = compose_config("method=bon", "method.selection=hard")
    check_same_experiment(tmp_path, cfg)
    text = (tmp_path / "experiment.json").read_text()
    assert '"selection": "hard"' in text and "Selection" not in text
    check_same_experiment(tmp_path, cfg)  # the same experiment: accepted


def _cli(*args: str, cwd: Path = ROOT):
    """The finished process and the CPU seconds it used (on a loaded shared machine wall time says little about
    whether the heavy imports were skipped; CPU time does: vLLM and torch alone take far more than 5 s)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return proc, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


@pytest.mark.parametrize("overrides,key", [BAD[0], BAD[5], BAD[4], BAD[10], BAD[14]],
                         ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_cli_refuses_before_the_run_folder_exists(overrides, key, tmp_path):
    out = tmp_path / "run"
    proc, cpu = _cli("model=tiny", "hardware=cpu", *overrides, f"hydra.run.dir={out}")
    text = proc.stderr + proc.stdout
    assert proc.returncode != 0
    assert named(text, key), text
    assert cpu < 5.0, f"config errors must come before heavy imports; took {cpu:.1f} s of CPU"
    assert not out.exists(), sorted(p.name for p in out.rglob("*"))


def test_cli_sweep_refuses_before_any_job(tmp_path):
    out = tmp_path / "sweep"
    proc, _ = _cli("-m", "model=tiny", "hardware=cpu", "batch_size=4,0", "seed=0,-1", f"hydra.sweep.dir={out}")
    text = proc.stderr
    assert proc.returncode != 0
    assert "batch_size=4 seed=-1" in text and "batch_size=0 seed=0" in text and "batch_size=4 seed=0" not in text
    assert not out.exists()


def test_cli_run_dir_under_a_regular_file_is_refused_naming_the_key(tmp_path):
    """It was a FileExistsError traceback from the Hydra callback."""
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file, not a folder")
    proc, _ = _cli("model=tiny", "hardware=cpu", f"hydra.run.dir={blocker}/run")
    assert proc.returncode == 2, proc.stderr
    assert named(proc.stderr, "hydra.run.dir") and f"{blocker} is a file, not a folder" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and blocker.read_text() == "a file, not a folder"
