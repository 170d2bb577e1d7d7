"""Config composition: every pair of group options composes, sweeps compose, bad overrides fail naming the key.

The six groups (model, method, dataset, hardware, logger, grader) have 5 x 7 x 9 x 5 x 2 x 3 = 9,450 combinations,
~0.15 s each to compose with Hydra. A pairwise covering set (tests/pairwise.py, 64 rows) composes every pair of
options together, and each row checks that every group's node is the one its option composes alone: the groups do
not interact (no option reaches into another group), which is what lets the pairs stand for the full product.
"""

import itertools
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from gsi.config.schema import METHOD_SCHEMAS, Config, register_configs
from pairwise import pairs_of, pairwise

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.fixture(scope="module")
def hydra_compose():
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield lambda overrides=(): compose("config", overrides=list(overrides))


def test_required_options_exist():
    assert {"qwen25_math", "tiny"} <= set(options("model"))
    assert {"gsi", "rsd", "bon"} <= set(options("method"))
    assert {"math500", "olympiad", "minerva"} <= set(options("dataset"))
    assert {"gpu3", "gpu1", "cpu"} <= set(options("hardware"))
    assert "none" in options("logger")


def test_defaults(hydra_compose):
    cfg = hydra_compose()
    assert cfg.model.name == "qwen25_math"
    assert cfg.model.small.path == "Qwen/Qwen2.5-Math-1.5B-Instruct"
    assert cfg.model.big.path == "Qwen/Qwen2.5-Math-7B-Instruct"
    assert cfg.model.reward.path == "Qwen/Qwen2.5-Math-PRM-7B"
    assert cfg.hardware.name == "gpu3" and cfg.logger.name == "none"
    assert cfg.method.name == "gsi" and cfg.method.beta == 20.0 and cfg.method.n_big == cfg.method.n


GROUPS = ("model", "method", "dataset", "hardware", "logger", "grader")
COMBINATIONS = pairwise({g: options(g) for g in GROUPS})


def test_the_combinations_cover_every_pair_of_options():
    wanted = {(f, a, g, b) for f, g in itertools.combinations(GROUPS, 2) for a in options(f) for b in options(g)}
    covered = set().union(*(pairs_of(row) for row in COMBINATIONS))
    assert wanted <= covered, sorted(wanted - covered)[:5]
    assert len(COMBINATIONS) < 100  # near the 63 that the two largest groups need; not the 9,450 of the product


@pytest.fixture(scope="module")
def alone(hydra_compose):
    """Each group's node, composed with only that group's option given (the other groups at their defaults)."""
    return {g: {o: OmegaConf.to_container(hydra_compose([f"{g}={o}"])[g]) for o in options(g)} for g in GROUPS}


@pytest.mark.parametrize("row", COMBINATIONS, ids=lambda row: "-".join(row.values()))
def test_every_pair_of_options_composes(hydra_compose, alone, row):
    cfg = hydra_compose([f"{g}={o}" for g, o in row.items()])
    # The composed config is typed: each node is its schema, and every value resolves.
    assert OmegaConf.get_type(cfg.method) is METHOD_SCHEMAS[cfg.method.name]
    assert all(cfg[g].name == o for g, o in row.items())
    resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    assert resolved["method"]["beta"] == cfg.beta
    # No group depends on another's option: each node is what its option composes alone.
    for g, o in row.items():
        assert OmegaConf.to_container(cfg[g]) == alone[g][o], g


@pytest.mark.parametrize("sweep", ["beta=0.5,1,2", "seed=0,1,2", "seed=range(3)"])
def test_sweeps_compose(hydra_compose, sweep):
    # Expand the sweep the way Hydra's basic sweeper does, then compose each job.
    override = OverridesParser.create().parse_overrides([sweep])[0]
    values = list(override.sweep_iterator())
    assert len(values) == 3
    key = override.key_or_group
    for v in values:
        cfg = hydra_compose(["method=gsi", f"{key}={v}"])
        assert cfg[key] == pytest.approx(float(v))
        if key == "beta":
            assert cfg.method.beta == pytest.approx(float(v))  # the top-level beta flows into the method


def test_experiment_cpu_demo(hydra_compose):
    cfg = hydra_compose(["+experiment=cpu_demo"])
    assert cfg.model.name == "tiny" and cfg.hardware.placement == "cpu"
    assert cfg.dataset.limit == 8 and cfg.method.n == 4


@pytest.mark.parametrize("override,error,needle", [
    ("bogus=1", ConfigCompositionException, "bogus"),
    ("beta=abc", ConfigCompositionException, "beta"),
    ("method=nope", MissingConfigException, "method/nope"),
    ("method.bogus=2", ConfigCompositionException, "method.bogus"),
    ("hardware.placement=gpu9", ConfigCompositionException, "placement"),
    ("dataset.limit=ten", ConfigCompositionException, "dataset.limit"),
])
def test_bad_overrides_fail(hydra_compose, override, error, needle):
    with pytest.raises(error) as info:
        hydra_compose([override])
    text = str(info.value) + str(info.value.__cause__ or "")
    assert needle in text


def test_schema_rejects_unknown_keys():
    base = OmegaConf.structured(Config)
    with pytest.raises((ConfigKeyError, ValidationError)):
        OmegaConf.merge(base, {"nonsense": 1})


@pytest.mark.parametrize("args,needle", [
    (["bogus=1"], "Key 'bogus' not in 'Config'"),
    (["beta=abc"], "full_key: beta"),
    (["method=nope"], "Could not find 'method/nope'"),
])
def test_cli_rejects_bad_overrides_before_heavy_imports(args, needle):
    """`python run.py` (a subprocess, ~2 s). Config errors come before the heavy imports: checked with Python's
    import log (-X importtime), not a wall clock that a loaded machine would break."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "run.py", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0
    assert needle in proc.stderr + proc.stdout
    imported = {line.rsplit("|", 1)[1].strip().split(".")[0] for line in proc.stderr.splitlines()
                if line.startswith("import time:") and "|" in line}
    assert "hydra" in imported  # the log is there
    assert not imported & {"torch", "vllm", "transformers"}, sorted(imported & {"torch", "vllm", "transformers"})


def test_cli_prints_composed_config():
    """`python run.py --cfg job` (a subprocess, ~2 s)."""
    proc = subprocess.run([sys.executable, "run.py", "--cfg", "job", "method=gsi", "dataset=olympiad"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    cfg = OmegaConf.create(proc.stdout)
    assert cfg.method.name == "gsi" and cfg.dataset.name == "olympiad"
    assert cfg.dataset.hub_path == "Hothan/OlympiadBench"


def test_reward_adapter_names_the_verifier_and_refuses_a_typo():
    """model.reward.adapter accepts every adapter gsi.engines.rewards defines, lm_verifier (model=toy's) among them,
    and refuses any other naming the key (before any model is loaded)."""
    from gsi.config.schema import compose_config
    from gsi.config.validate import problems

    assert compose_config("model=toy").model.reward.adapter == "lm_verifier"
    assert not [p for p in problems(compose_config("model=toy")) if "adapter" in p]
    assert not [p for p in problems(compose_config("model=tiny", "model.reward.adapter=lm_verifier"))
                if "adapter" in p]
    bad = [p for p in problems(compose_config("model=toy", "model.reward.adapter=lm_verifyer")) if "adapter" in p]
    assert len(bad) == 1 and "model.reward.adapter='lm_verifyer'" in bad[0] and "lm_verifier" in bad[0]
