"""Config composition: every group option composes, sweeps compose, bad overrides fail naming the key."""

import itertools
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from gsi.config import METHOD_SCHEMAS, Config, register_configs

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


@pytest.mark.parametrize("model,method,dataset,hardware,logger", list(itertools.product(
    options("model"), options("method"), options("dataset"), options("hardware"), options("logger"))))
def test_every_combination_composes(hydra_compose, model, method, dataset, hardware, logger):
    cfg = hydra_compose([f"model={model}", f"method={method}", f"dataset={dataset}", f"hardware={hardware}",
                         f"logger={logger}"])
    # The composed config is typed: each node is its schema, and every value resolves.
    assert OmegaConf.get_type(cfg.method) is METHOD_SCHEMAS[cfg.method.name]
    assert cfg.model.name == model and cfg.dataset.name == dataset and cfg.hardware.name == hardware
    resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    assert resolved["method"]["beta"] == cfg.beta


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
def test_cli_rejects_bad_overrides_fast(args, needle):
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
    elapsed = time.perf_counter() - start
    assert proc.returncode != 0
    assert needle in proc.stderr + proc.stdout
    assert elapsed < 5.0, f"config errors must come before heavy imports; took {elapsed:.1f}s"


def test_cli_prints_composed_config():
    proc = subprocess.run([sys.executable, "run.py", "--cfg", "job", "method=gsi", "dataset=olympiad"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    cfg = OmegaConf.create(proc.stdout)
    assert cfg.method.name == "gsi" and cfg.dataset.name == "olympiad"
    assert cfg.dataset.hub_path == "Hothan/OlympiadBench"
