"""The papers' settings as presets: the RSD paper's datasets (gaokao2023en, mmlu_stem), model presets (Skywork
1.5B PRM, 72B target), the gpu6_tp4 hardware and paper_rsd_original(_72b): they compose, and the RSD preset runs
end to end on the tiny vLLM models with a tiny Skywork-architecture stand-in as its PRM."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

import gsi.data as data

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("GSI_DATA_DIR") or ROOT.parents[0] / "shared" / "data")
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"benchmark data not found at {DATA} (set GSI_DATA_DIR)")
NEW_PRESETS = ("paper_rsd_original", "paper_rsd_original_72b")


def _dataset_cfg(name):
    spec = data.REGISTRY[name]
    return SimpleNamespace(name=name, hub_path=spec.hub_path, hub_config=spec.hub_config, split=spec.split,
                           data_dir=str(DATA), local_file=spec.local_file, limit=None, offset=0)


@needs_data
def test_gaokao2023en():
    problems = data.load_problems(_dataset_cfg("gaokao2023en"))
    assert len(problems) == 383  # 385 rows, 2 without an answer left out (their answer is in the question)
    assert {"HMMT2023General_9", "052023SATS4_11"}.isdisjoint(p.id for p in problems)
    assert len({p.id for p in problems}) == 383
    assert all("$" not in p.reference and p.reference.strip() for p in problems)
    assert problems[0].reference == "\\{x|-2\\leq x < 1\\}" and problems[8].reference == "48, 384"


@needs_data
def test_mmlu_stem_is_asked_with_its_choices():
    problems = data.load_problems(_dataset_cfg("mmlu_stem"))
    assert len(problems) == 3018
    assert {p.reference for p in problems} == {"A", "B", "C", "D"}
    first = problems[0]
    assert first.reference == "C"  # answer index 2
    assert first.problem.startswith("Based on the characteristic population curves")
    assert "\nAnswer Choices: (A) maintain the population" in first.problem and " (D) increase the mortality rate" \
        in first.problem


def test_mmlu_rows_without_four_choices_or_a_valid_index_are_reported(tmp_path):
    (tmp_path / "mmlu_stem").mkdir()
    rows = [{"question": "q1", "choices": ["a", "b", "c", "d"], "answer": 1},
            {"question": "q2", "choices": ["a", "b"], "answer": 0},
            {"question": "q3", "choices": ["a", "b", "c", "d"], "answer": 7}]
    (tmp_path / "mmlu_stem" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = _dataset_cfg("mmlu_stem")
    cfg.data_dir = str(tmp_path)
    with pytest.raises(data.DatasetError, match=r"2 row\(s\).*id=1 \(line 2\): no problem.*id=2 \(line 3\): no answer"):
        data.load_problems(cfg)


def test_hub_defaults_are_registered(make_cfg):
    for name, hub in (("gaokao2023en", "MARIO-Math-Reasoning/Gaokao2023-Math-En"), ("mmlu_stem", "TIGER-Lab/MMLU-STEM")):
        cfg = make_cfg(f"dataset={name}")
        assert cfg.dataset.name == name and cfg.dataset.hub_path == hub == data.REGISTRY[name].hub_path
        assert cfg.dataset.local_file == data.REGISTRY[name].local_file


@pytest.mark.parametrize("preset", NEW_PRESETS)
def test_presets_compose(preset, make_cfg):
    """As `run.py --cfg job +experiment=PRESET` composes them (test_config.py runs that command line itself)."""
    cfg = make_cfg(f"+experiment={preset}")
    assert cfg.method.greedy is True and cfg.method.patience == 5


def test_paper_rsd_original_is_the_rsd_papers_setting(make_cfg):
    cfg = make_cfg("+experiment=paper_rsd_original")
    assert cfg.model.name == "qwen25_math_skywork"
    assert cfg.model.reward.path == "Skywork/Skywork-o1-Open-PRM-Qwen-2.5-1.5B"
    assert cfg.model.reward.adapter == "skywork_prm"
    assert (cfg.model.small.path, cfg.model.big.path) == ("Qwen/Qwen2.5-Math-1.5B-Instruct",
                                                          "Qwen/Qwen2.5-Math-7B-Instruct")
    m = cfg.method
    assert (m.name, m.n, m.n_big, m.delta, m.greedy, m.patience) == ("rsd", 1, 1, 0.7, True, 5)
    assert cfg.grader.name == "qwen"
    assert (cfg.generation.max_step_tokens, cfg.generation.max_steps) == (4096, 100)
    assert cfg.batch_size >= 3018  # patience: every problem of the largest dataset in one batch
    big = make_cfg("+experiment=paper_rsd_original_72b")
    assert big.model.big.path == "Qwen/Qwen2.5-Math-72B-Instruct" and big.hardware.tensor_parallel_big == 4
    assert big.method.greedy and big.grader.name == "qwen"


def test_sweep_lists_the_rsd_papers_datasets():
    import yaml

    preset = yaml.safe_load((ROOT / "conf" / "experiment" / "paper_rsd_original.yaml").read_text())
    datasets = preset["hydra"]["sweeper"]["params"]["dataset"].split(",")
    assert set(datasets) == {"math500", "gsm8k", "gaokao2023en", "olympiad", "mmlu_stem", "minerva"}
    assert set(datasets) <= set(data.REGISTRY)


def test_gpu6_tp4_places_the_72b_target_on_four_gpus(make_cfg):
    from gsi.engines.placement import check_hardware, placement_devices

    cfg = make_cfg("model=qwen25_math_72b", "hardware=gpu6_tp4")
    errors: list[str] = []
    check_hardware(cfg.hardware, errors, check_devices=False)
    assert errors == []
    assert placement_devices(cfg.hardware) == {"small": [0], "big": [1, 2, 3, 4], "reward": [5]}
    errors = []
    check_hardware(make_cfg("hardware=gpu6_tp4", "hardware.gpus=5").hardware, errors, check_devices=False)
    assert errors and "hardware.gpus=5" in errors[0]


# ---------------------------------------------------------------------------------------------------------------
# End to end on vLLM: paper_rsd_original with the tiny generators and a tiny Skywork-PRM stand-in
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def skywork_standin(tiny_engines, prm_standins):
    """tiny_engines' small and big models with the session's Skywork-architecture PRM stand-in (Qwen2ForPrmModel,
    value head, on the tiny reward backbone: conftest `prm_standins`, tests/prm_standins.py) as the reward role."""
    from transformers import AutoTokenizer

    from gsi.engines.base import Engines
    from gsi.engines.rewards import make_adapter
    from gsi.engines.specs import needs_custom_models
    from gsi.engines.vllm import VLLMRewardModel

    standin = prm_standins["skywork_prm"]
    assert standin.plan.adapter == "skywork_prm" and needs_custom_models(standin.plan)
    adapter = make_adapter("skywork_prm", AutoTokenizer.from_pretrained(standin.folder), delimiter="\n\n")
    reward = VLLMRewardModel(standin.llm, adapter)
    return standin.folder, Engines(small=tiny_engines.small, big=tiny_engines.big, reward=reward,
                                   tokenizer=tiny_engines.tokenizer, params=dict(tiny_engines.params))


def _preset_on_tiny(make_cfg, preset, folder, *extra):
    return make_cfg(f"+experiment={preset}", "model=tiny", "hardware=cpu", "hardware.cpu_kvcache_gb=0.25",
                    f"model.reward.path={folder}", "model.reward.adapter=skywork_prm", "dataset.limit=2",
                    "generation.max_step_tokens=16", "generation.max_steps=3", "trace=true", *extra)


@pytest.mark.vllm
def test_paper_rsd_original_runs_with_a_skywork_standin(skywork_standin, make_cfg, tmp_path):
    """On the session's engines and its Skywork stand-in (see skywork_standin)."""
    from gsi.run import run

    folder, engines = skywork_standin
    texts = {}
    # (the 72B preset differs only in its model and hardware, which the tiny models and the CPU replace)
    for preset, dataset, seed in (("paper_rsd_original", "gaokao2023en", 0), ("paper_rsd_original", "gaokao2023en", 1),
                                  ("paper_rsd_original_72b", "mmlu_stem", 0)):
        cfg = _preset_on_tiny(make_cfg, preset, folder, f"dataset={dataset}", f"seed={seed}")
        assert (cfg.method.greedy, cfg.method.patience, cfg.grader.name) == (True, 5, "qwen")
        out = tmp_path / f"{dataset}-{seed}"
        summary = run(cfg, out=out, engines=engines)
        assert summary["grader"] == "qwen" and summary["n_problems"] == 2 and summary["method"] == "rsd"
        assert json.loads((out / "experiment.json").read_text())["grader"]["name"] == "qwen"
        records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
        assert [r["grader"] for r in records] == ["qwen", "qwen"]
        for r in records:
            assert 1 <= r["steps"] <= 3 and len(r["trace"]) == r["steps"]
            for step in r["trace"]:
                (cand,) = step["candidates"]  # n = 1: one draft
                assert 0.0 < cand["r"] < 1.0  # the Skywork value head's sigmoid
                assert step["accepted"] == (cand["r"] >= 0.7)
                if not step["accepted"]:
                    assert len(step["fallback"]["candidates"]) == 1  # one target step, taken as is
        texts[(dataset, seed)] = [r["final_text"] for r in records]
        if dataset == "mmlu_stem":
            assert all("\nAnswer Choices: (A) " in r["problem"] for r in records)
    # greedy draft and target: the seed changes nothing
    assert texts[("gaokao2023en", 0)] == texts[("gaokao2023en", 1)]
