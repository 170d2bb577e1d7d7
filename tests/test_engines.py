"""The engine registry: validation (fast, no engine), PRM input layouts (no vLLM), and the three tiny engines on
vLLM-CPU (marked `vllm`; started once per session by the `tiny_engines` fixture in conftest.py)."""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from gsi.engines.base import FINISH_DELIMITER, FINISH_EOS, FINISH_LENGTH, GenerateRequest, RewardRequest
from gsi.engines.plan import validate
from gsi.engines.registry import build_engines
from gsi.engines.resolve import ConfigError, looks_local
from gsi.engines.rewards import (
    QWEN_MATH_SYSTEM_PROMPT,
    LMVerifierAdapter,
    QwenPRMAdapter,
    SkyworkPRMAdapter,
    TokenClassificationAdapter,
    resolve_adapter_name,
    split_steps,
)
from gsi.models.tiny import tiny_paths

from prm_standins import fake_prm_reference

ROOT = Path(__file__).resolve().parents[1]
DELIM = "\n\n"


def _edit(cfg, **dotted):
    """A copy of `cfg` with dotted keys set (struct mode kept: unknown keys still fail)."""
    new = copy.deepcopy(cfg)
    for key, value in dotted.items():
        OmegaConf.update(new, key.replace("__", "."), value, merge=False)
    return new


@pytest.fixture
def no_engine_start(monkeypatch):
    """Fail the test if anything tries to start a vLLM engine."""
    import gsi.engines.launch as launch
    import gsi.engines.registry as registry

    def boom(*args, **kwargs):
        raise AssertionError("an engine was started although the config is invalid")

    monkeypatch.setattr(registry, "start_llms", boom)
    monkeypatch.setattr(launch, "start_llm", boom)


@pytest.fixture(scope="module")
def tiny_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_paths()["small"])


# ---------------------------------------------------------------------------------------------------------------
# Validation: fast, no engine
# ---------------------------------------------------------------------------------------------------------------
def test_missing_local_model_path_names_key(tiny_cfg, no_engine_start, tmp_path):
    cfg = _edit(tiny_cfg, **{"model.small.path": str(tmp_path / "nope" / "model")})
    with pytest.raises(ConfigError, match=r"model\.small\.path"):
        build_engines(cfg)
    for local in ("./models/x", "~/nothing-here-xyz", "../x", "a/b/c"):
        with pytest.raises(ConfigError, match=r"model\.big\.path"):
            validate(_edit(tiny_cfg, **{"model.big.path": local}), check_devices=False)


def test_unknown_tiny_role_names_key(tiny_cfg, no_engine_start):
    with pytest.raises(ConfigError, match=r"model\.reward\.path.*tiny://judge"):
        build_engines(_edit(tiny_cfg, **{"model.reward.path": "tiny://judge"}))


def test_unknown_reward_architecture_names_adapter(tiny_cfg, no_engine_start, tmp_path):
    folder = tmp_path / "weird-prm"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["FooForValueEstimation"]}))
    with pytest.raises(ConfigError, match=r"model\.reward\.adapter") as err:
        build_engines(_edit(tiny_cfg, **{"model.reward.path": str(folder), "model.reward.adapter": "auto"}))
    assert "FooForValueEstimation" in str(err.value)
    # an adapter that contradicts config.json, and an adapter nobody knows
    with pytest.raises(ConfigError, match=r"model\.reward\.adapter='qwen_prm'"):
        validate(_edit(tiny_cfg, **{"model.reward.adapter": "qwen_prm"}), check_devices=False)
    with pytest.raises(ConfigError, match=r"model\.reward\.adapter='nonsense'"):
        validate(_edit(tiny_cfg, **{"model.reward.adapter": "nonsense"}), check_devices=False)


def test_gpu_placements_name_hardware_keys(make_cfg, no_engine_start):
    cfg = make_cfg("model=tiny", "hardware=gpu3", "hardware.gpus=1")
    with pytest.raises(ConfigError, match=r"hardware\.gpus=1 does not fit placement gpu3"):
        build_engines(cfg)
    cfg = make_cfg("model=tiny", "hardware=gpu3", "hardware.gpus=3", "hardware.tensor_parallel_big=2")
    with pytest.raises(ConfigError, match=r"hardware\.gpus=3.*need 4"):
        validate(cfg, check_devices=False)
    cfg = make_cfg("model=tiny", "hardware=gpu1", "hardware.gpu_memory_utilization.big=0.7")
    with pytest.raises(ConfigError, match=r"hardware\.gpu_memory_utilization"):
        validate(cfg, check_devices=False)
    cfg = make_cfg("model=tiny", "hardware=gpu1", "hardware.tensor_parallel_big=2")
    with pytest.raises(ConfigError, match=r"hardware\.tensor_parallel_big"):
        validate(cfg, check_devices=False)
    cfg = make_cfg("model=tiny", "hardware=cpu", "hardware.gpus=2")
    with pytest.raises(ConfigError, match=r"hardware\.gpus=2 does not fit placement cpu"):
        validate(cfg, check_devices=False)
    cfg = make_cfg("model=tiny", "hardware=cpu", "hardware.max_num_batched_tokens=1024")
    with pytest.raises(ConfigError, match=r"hardware\.max_num_batched_tokens=1024"):
        validate(cfg, check_devices=False)


def test_real_gpu_count_is_checked(make_cfg, no_engine_start, monkeypatch):
    import gsi.engines.placement as placement

    monkeypatch.setattr(placement, "visible_cuda_devices", lambda: 2)
    with pytest.raises(ConfigError, match=r"hardware\.gpus=3: placement gpu3 needs 3 GPUs but this process sees 2"):
        validate(make_cfg("model=tiny", "hardware=gpu3"))
    monkeypatch.setattr(placement, "visible_cuda_devices", lambda: 4)
    validate(make_cfg("model=tiny", "hardware=gpu3"))  # fits


def test_cpu_engines_do_not_bind_threads_and_wait_passively_unless_the_user_says(monkeypatch):
    from gsi.engines.placement import prepare_process_env

    for key in ("VLLM_CPU_OMP_THREADS_BIND", "OMP_WAIT_POLICY", "VLLM_CPU_KVCACHE_SPACE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "4")
    prepare_process_env("cpu")
    assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "nobind" and os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    assert "VLLM_CPU_KVCACHE_SPACE" not in os.environ  # hardware.cpu_kvcache_gb sets each engine's
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0-1")
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    prepare_process_env("cpu")
    assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "0-1" and os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_small_and_big_must_share_a_tokenizer(tiny_cfg, no_engine_start, tmp_path):
    from transformers import AutoTokenizer

    big = tmp_path / "big-other-vocab"
    shutil.copytree(tiny_paths()["big"], big)
    tok = AutoTokenizer.from_pretrained(big)
    tok.add_tokens(["<|a_new_token|>"])
    tok.save_pretrained(big)
    with pytest.raises(ConfigError, match=r"model\.big\.path.*tokenizer"):
        build_engines(_edit(tiny_cfg, **{"model.big.path": str(big)}))


@pytest.mark.vllm
def test_placement_engine_arguments(make_cfg, monkeypatch):
    """What each placement asks vLLM for (no engine is started)."""
    pytest.importorskip("vllm", reason="vLLM is not importable")
    import gsi.engines.placement as placement
    from gsi.engines.specs import engine_specs

    monkeypatch.setattr(placement, "visible_cuda_devices", lambda: 8)
    cfg = make_cfg("model=tiny", "hardware=gpu3", "hardware.gpus=4", "hardware.tensor_parallel_big=2")
    plan = validate(cfg)
    specs = {s.role: s for s in engine_specs(cfg, plan)}
    assert {r: s.kwargs["device_ids"] for r, s in specs.items()} == {"small": [0], "big": [1, 2], "reward": [3]}
    assert specs["big"].kwargs["tensor_parallel_size"] == 2
    assert {r: s.kwargs["gpu_memory_utilization"] for r, s in specs.items()} == dict(cfg.hardware.gpu_memory_utilization)
    assert not any(s.env for s in specs.values()) and placement.start_parallel(plan, list(specs.values()))
    assert "enable_chunked_prefill" not in specs["small"].kwargs  # seeds are safe with chunked prefill on GPUs

    cfg = make_cfg("model=tiny", "hardware=gpu1")
    plan = validate(cfg)
    specs = {s.role: s for s in engine_specs(cfg, plan)}
    assert {r: s.kwargs["gpu_memory_utilization"] for r, s in specs.items()} == {"small": 0.15, "big": 0.45,
                                                                                 "reward": 0.3}
    assert not any("device_ids" in s.kwargs for s in specs.values())
    assert not placement.start_parallel(plan, list(specs.values()))  # one GPU: vLLM's memory profiling needs serial

    cfg = make_cfg("model=tiny", "hardware=cpu")
    plan = validate(cfg)
    specs = {s.role: s for s in engine_specs(cfg, plan)}
    assert all(s.kwargs["kv_cache_memory_bytes"] == int(cfg.hardware.cpu_kvcache_gb * 2**30) for s in specs.values())
    assert specs["small"].kwargs["enable_chunked_prefill"] is False and specs["big"].kwargs["enable_chunked_prefill"] is False
    assert specs["reward"].kwargs["runner"] == "pooling"
    assert specs["small"].kwargs["worker_extension_cls"] == "gsi.engines.worker.TemperatureExtension"
    # parallel, unless the opt-in in-process mode (GSI_VLLM_INPROCESS=1) runs them inside this process
    assert placement.start_parallel(plan, list(specs.values())) == (not placement.cpu_inprocess())


@pytest.mark.toy
def test_a_verifier_reward_is_a_generator_engine(make_cfg):
    """model=toy's PRM is a causal LM (lm_verifier): its engine, in process or served, is a generate runner with
    the temperature extension (set to T = 1 by gsi.cluster.serve), chunked prefill off on the CPU, no pooler.
    Builds the toy models on first use."""
    pytest.importorskip("vllm", reason="vLLM is not importable")
    from gsi.cluster.serve import server_command
    from gsi.engines.specs import engine_specs

    cfg = make_cfg("model=toy", "hardware=cpu")
    plan = validate(cfg)
    assert plan.adapter == "lm_verifier"
    (spec,) = engine_specs(cfg, plan, roles=("reward",))
    assert "runner" not in spec.kwargs and "pooler_config" not in spec.kwargs
    assert spec.kwargs["worker_extension_cls"] == "gsi.engines.worker.TemperatureExtension"
    assert spec.kwargs["enable_chunked_prefill"] is False
    cmd, _ = server_command(cfg, "reward", "127.0.0.1", 8003)
    assert "--runner" not in cmd and cmd[cmd.index("--worker-extension-cls") + 1].endswith("TemperatureExtension")
    with pytest.raises(ConfigError, match=r"model\.reward\.adapter='token_classification'"):
        validate(_edit(cfg, **{"model.reward.adapter": "token_classification"}), check_devices=False)


def test_hub_ids_and_paths():
    assert not looks_local("Qwen/Qwen2.5-Math-7B-Instruct")
    assert looks_local("/abs/model") and looks_local("./rel") and looks_local("~/m") and looks_local("a/b/c")
    assert resolve_adapter_name("qwen_prm", None) == "qwen_prm"  # a hub id: trust the configured adapter
    with pytest.raises(ValueError, match=r"model\.reward\.adapter=auto"):
        resolve_adapter_name("auto", None)
    assert resolve_adapter_name("auto", ["Qwen2ForProcessRewardModel"]) == "qwen_prm"
    assert resolve_adapter_name("auto", ["Qwen2ForPrmModel"]) == "skywork_prm"
    assert resolve_adapter_name("auto", ["Qwen2ForTokenClassification"]) == "token_classification"


def test_validation_does_not_import_vllm(tmp_path):
    """build_engines on a bad config fails before vLLM (or torch's engines) is imported: run in a fresh process."""
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        sys.path.insert(0, {str(ROOT / 'tests')!r})
        from conftest import compose_cfg
        from gsi.engines.registry import build_engines
        from gsi.engines.resolve import ConfigError
        cfg = compose_cfg("model=tiny", "hardware=cpu", "model.small.path=/definitely/not/here")
        try:
            build_engines(cfg)
        except ConfigError as exc:
            assert "model.small.path" in str(exc), exc
        print("VLLM_IMPORTED" if "vllm" in sys.modules else "VLLM_NOT_IMPORTED")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert "VLLM_NOT_IMPORTED" in out.stdout, out.stdout + out.stderr


# ---------------------------------------------------------------------------------------------------------------
# PRM adapters: input layouts, without vLLM
# ---------------------------------------------------------------------------------------------------------------
def test_split_steps_drops_empty_and_trailing_delimiters():
    assert split_steps(["Let x = 2.\n\n", "So y = 3.\n\n"], DELIM) == ["Let x = 2.", "So y = 3."]
    assert split_steps(["Let x = 2.\n\n", "So y = 3."], DELIM) == ["Let x = 2.", "So y = 3."]
    assert split_steps(["a\n\n\n", "  \n\n", "", "b\n\nc"], DELIM) == ["a", "b", "c"]
    assert split_steps(["\n\n"], DELIM) == []


@pytest.fixture(scope="module")
def qwen_like_tokenizer(tiny_tokenizer):
    """The tiny tokenizer plus Qwen2.5-Math-PRM's `<extra_0>` step tag."""
    tok = copy.deepcopy(tiny_tokenizer)
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>", "<extra_0>"]})
    return tok


def test_qwen_prm_input_matches_model_card(qwen_like_tokenizer):
    tok = qwen_like_tokenizer
    adapter = QwenPRMAdapter(tok, delimiter=DELIM)
    assert adapter.system_prompt == QWEN_MATH_SYSTEM_PROMPT
    problem = "Find the sum of $2$ and $3$."
    steps = ["We add the numbers: $2 + 3 = 5$.\n\n", "The answer is $\\boxed{5}$.\n\n"]
    x = adapter.build(RewardRequest(problem, steps))
    # the model card's string: steps joined by <extra_0>, a trailing <extra_0>, then "<|im_end|>\n" (dropped:
    # it follows the last tag and cannot change a causal model's score there)
    card = tok.apply_chat_template([
        {"role": "system", "content": QWEN_MATH_SYSTEM_PROMPT},
        {"role": "user", "content": problem},
        {"role": "assistant", "content": "<extra_0>".join(s.strip() for s in steps) + "<extra_0>"},
    ], tokenize=False, add_generation_prompt=False)
    assert card.endswith("<extra_0><|im_end|>\n")
    expected = card[: -len("<|im_end|>\n")]
    assert tok.decode(x.token_ids, skip_special_tokens=False) == expected
    assert x.token_ids == tok.encode(expected, add_special_tokens=False)  # per-step tokenisation == whole string
    tag = tok.convert_tokens_to_ids("<extra_0>")
    assert [i for i, t in enumerate(x.token_ids) if t == tag] == x.step_ends and len(x.step_ends) == 2
    assert x.token_ids[-1] == tag
    # a trailing delimiter, or none, gives the same input; the steps are never scored past the last real one
    same = adapter.build(RewardRequest(problem, [s.rstrip() for s in steps]))
    assert same.token_ids == x.token_ids
    assert adapter.build(RewardRequest(problem, steps + ["\n\n"])).token_ids == x.token_ids
    # ALL pooling with the prefix cache (the last row is the last tag), not vLLM's default STEP pooling
    assert adapter.vllm_pooler_config == {"tok_pooling_type": "ALL"}
    assert adapter.pooling_params() == {"use_activation": False, "skip_reading_prefix_cache": False}
    # P(positive) at the last tag: softmax over the two logits of the last row
    assert adapter.score_rows([[5.0, -5.0], [0.0, math.log(3.0)]]) == pytest.approx(0.75)


def test_qwen_prm_needs_its_step_tag(tiny_tokenizer):
    with pytest.raises(ValueError, match="<extra_0>"):
        QwenPRMAdapter(tiny_tokenizer, delimiter=DELIM)


def test_skywork_input_matches_prepare_input(tiny_tokenizer):
    tok = tiny_tokenizer
    adapter = SkyworkPRMAdapter(tok, delimiter=DELIM)
    problem = "Find $x$ if $2x = 6$."
    response = "Divide both sides by 2.\n\nSo $x = 3$.\n\n"
    x = adapter.build(RewardRequest(problem, ["Divide both sides by 2.\n\n", "So $x = 3$.\n\n"]))
    # Skywork's prepare_input (skywork-o1-prm-inference, as vendored by RSD), minus its empty trailing step
    step_token_id = tok.encode(DELIM, add_special_tokens=False)[-1]
    bos = tok.bos_token or ""
    want = tok.encode(bos + problem + "\n", add_special_tokens=False)
    flags = [0] * len(want)
    for step in response.split(DELIM):
        if step == "":
            continue  # the original appends a bare step token here, and scores it: the off-by-one
        ids = tok.encode(step, add_special_tokens=False) + [step_token_id]
        want += ids
        flags += [0] * (len(ids) - 1) + [1]
    assert x.token_ids == want
    assert x.step_ends == [i for i, f in enumerate(flags) if f]
    assert adapter.system_prompt is None
    assert adapter.score_rows([[0.0], [math.log(4.0)]]) == pytest.approx(0.8)


@pytest.mark.parametrize("adapter_cls", [TokenClassificationAdapter, SkyworkPRMAdapter, QwenPRMAdapter,
                                         LMVerifierAdapter])
def test_prm_inputs_are_stable_prefixes(adapter_cls, tiny_tokenizer, qwen_like_tokenizer):
    tok = qwen_like_tokenizer if adapter_cls is QwenPRMAdapter else tiny_tokenizer
    adapter = adapter_cls(tok, delimiter=DELIM, system_prompt="Be brief.")
    steps = ["First, $a + b = 7$.\n\n", "Then $a = 3$, so\n\n", "$b = 4$.\n\n", "The answer is $\\boxed{4}$."]
    prev = None
    for k in range(1, len(steps) + 1):
        x = adapter.build(RewardRequest("Solve it.", steps[:k]))
        assert len(x.step_ends) == k and x.step_ends[-1] == len(x.token_ids) - 1
        if prev is not None:
            assert x.token_ids[: len(prev)] == prev  # step k+1's input extends step k's: prefix-cache hits
        prev = x.token_ids
        # what the compute accounting charges the PRM: its own token count, empty steps dropped
        assert adapter.input_length("Solve it.", steps[:k] + ["\n\n"]) == len(x.token_ids)
    assert adapter.input_length("Solve it.", []) == x.prompt_len


def test_token_classification_layout(tiny_tokenizer):
    adapter = TokenClassificationAdapter(tiny_tokenizer, delimiter=DELIM, system_prompt="Sys.")
    x = adapter.build(RewardRequest("Q?", ["One.\n\n", "Two."]))
    prompt = tiny_tokenizer.apply_chat_template([{"role": "system", "content": "Sys."},
                                                 {"role": "user", "content": "Q?"}],
                                                add_generation_prompt=True, tokenize=False)
    enc = lambda s: tiny_tokenizer.encode(s, add_special_tokens=False)  # noqa: E731
    assert x.token_ids == enc(prompt) + enc("One.") + enc(DELIM) + enc("Two.") + enc(DELIM)
    assert adapter.score_rows([[0.0], [0.0]]) == pytest.approx(0.5)
    assert adapter.score_rows([[1.0, 1.0 + math.log(3.0)]]) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="non-empty step"):
        adapter.build(RewardRequest("Q?", ["\n\n"]))


def test_lm_verifier_layout_and_read_out(tiny_tokenizer):
    """A causal-LM verifier reads the generators' layout (token_classification's) and scores the last step by its
    least likely own token: the delimiter after the step is forced but not read."""
    adapter = LMVerifierAdapter(tiny_tokenizer, delimiter=DELIM, system_prompt="Sys.")
    req = RewardRequest("Q?", ["One.\n\n", "Two."])
    x = adapter.build(req)
    assert x.token_ids == TokenClassificationAdapter(tiny_tokenizer, delimiter=DELIM, system_prompt="Sys.").build(
        req).token_ids
    start = adapter.scored_start(x)
    assert start == x.step_ends[0] + 1
    assert tiny_tokenizer.decode(x.token_ids[start:]) == "Two." + DELIM
    assert adapter.scored_start(adapter.build(RewardRequest("Q?", ["One."]))) == x.prompt_len
    sep = len(adapter.separator_ids())
    own = [math.log(0.9), math.log(0.3), math.log(0.8)]
    assert adapter.score_rows(own + [math.log(1e-6)] * sep) == pytest.approx(0.3)  # the delimiter is not read
    with pytest.raises(ValueError, match="own tokens"):
        adapter.score_rows([0.0] * sep)
    # a causal LM can only be a verifier: auto picks it, an explicit adapter is checked against config.json
    assert resolve_adapter_name("auto", ["Qwen2ForCausalLM"]) == "lm_verifier"
    assert resolve_adapter_name("lm_verifier", ["GPTNeoXForCausalLM"]) == "lm_verifier"
    with pytest.raises(ValueError, match="model.reward.adapter='lm_verifier'"):
        resolve_adapter_name("lm_verifier", ["Qwen2ForTokenClassification"])


def test_verifier_reward_is_the_least_likely_token_of_the_last_step(tiny_tokenizer):
    """gsi.engines.verifier over a fake teacher-forcing transport whose log-prob of token t is known: one request
    per reward, context = prompt and earlier steps, continuation = the last step and its delimiter; the reward is
    exp(min over the step's own tokens); empty requests cost no call; the tokens sent are the reward role's stats."""
    from gsi.engines.frontend import EMPTY_STEP_REWARD, StepGenerator, TeacherForced
    from gsi.engines.verifier import VerifierRewardModel

    def logp(t: int) -> float:
        return -0.01 * (t % 97)

    class Fake(StepGenerator):
        temperature = 1.0
        max_model_len = 4096

        def __init__(self):
            super().__init__("reward", tiny_tokenizer, delimiter=DELIM, eos_token_ids=[tiny_tokenizer.eos_token_id])
            self.sent = []

        def _sample(self, samples, *, greedy):
            raise AssertionError("a verifier never samples")

        def _teacher_force(self, prompts, *, use_cache):
            self.sent += [list(p) for p in prompts]
            return [TeacherForced(0, lambda pos, p=p: logp(p[pos])) for p in prompts]

        def _failure(self, message):
            return RuntimeError(message)

    adapter = LMVerifierAdapter(tiny_tokenizer, delimiter=DELIM, system_prompt="")
    fake = Fake()
    model = VerifierRewardModel(fake, adapter)
    reqs = [RewardRequest("Q?", ["One two.\n\n", "Three four five."]), RewardRequest("Q?", ["\n\n"]),
            RewardRequest("Q?", ["Six."])]
    got = model.reward(reqs)
    want = []
    for r in (reqs[0], reqs[2]):
        x = adapter.build(r)
        step = x.token_ids[adapter.scored_start(x): len(x.token_ids) - len(adapter.separator_ids())]
        want.append(math.exp(min(logp(t) for t in step)))
    assert got == pytest.approx([want[0], EMPTY_STEP_REWARD, want[1]]) and len(set(want)) == 2
    assert fake.sent == [adapter.build(reqs[0]).token_ids, adapter.build(reqs[2]).token_ids]
    assert model.stats.prompt_tokens == sum(map(len, fake.sent)) == sum(
        model.input_length(r.problem, r.steps) for r in (reqs[0], reqs[2]))
    with pytest.raises(ValueError, match="T=1.0"):
        fake.temperature = 0.7
        VerifierRewardModel(fake, adapter)


# ---------------------------------------------------------------------------------------------------------------
# The tiny engines on vLLM-CPU (one start per session)
# ---------------------------------------------------------------------------------------------------------------
PROBLEMS = [
    "Find the sum of $2$ and $3$.",
    "Let $x^{2} = 49$ with $x > 0$. Find $x$.",
    "A triangle has sides 3, 4 and 5. What is its area?",
    "Compute $\\frac{12}{4} \\cdot 7$.",
]


def _context(engines, problem: str, cfg) -> list[int]:
    tok = engines.tokenizer
    text = tok.apply_chat_template([{"role": "system", "content": cfg.model.system_prompt},
                                    {"role": "user", "content": problem}], add_generation_prompt=True,
                                   tokenize=False)
    return tok.encode(text, add_special_tokens=False)


@pytest.fixture(scope="module")
def contexts(tiny_engines, tiny_cfg):
    return [_context(tiny_engines, p, tiny_cfg) for p in PROBLEMS]


@pytest.fixture(scope="module")
def long_contexts(tiny_engines, contexts):
    """Contexts of 150-300 tokens (more than one 128-token CPU KV block): a prompt plus a few greedy steps."""
    small = tiny_engines.small
    out = []
    for ctx in contexts:
        ctx = list(ctx)
        while len(ctx) < 150:
            step = small.generate([GenerateRequest(ctx, 1, 0, 40)], greedy=True)[0][0]
            ctx += step.token_ids
        out.append(ctx[:300])
    return out


@pytest.fixture(scope="module")
def tf_models():
    """transformers float32 copies of the tiny models (the reference for the engines' numbers)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForTokenClassification

    paths = tiny_paths()
    models = {role: AutoModelForCausalLM.from_pretrained(paths[role], dtype=torch.float32).eval()
              for role in ("small", "big")}
    models["reward"] = AutoModelForTokenClassification.from_pretrained(paths["reward"], dtype=torch.float32).eval()
    return models


def _tf_logprob(model, context, continuation, temperature: float) -> float:
    import torch

    ids = torch.tensor([list(context) + list(continuation)])
    with torch.no_grad():
        logits = model(ids).logits[0].double() / temperature
    logp = torch.log_softmax(logits, dim=-1)
    n = len(context)
    return float(sum(logp[n + i - 1, tok] for i, tok in enumerate(continuation)))


@pytest.mark.vllm
def test_engine_attributes(tiny_engines, tiny_cfg):
    for gen in (tiny_engines.small, tiny_engines.big):
        assert gen.max_model_len == tiny_cfg.model.small.max_model_len == 2048
        assert gen.temperature == pytest.approx(tiny_cfg.generation.temperature)
        assert tiny_engines.tokenizer.eos_token_id in gen.eos_token_ids
        assert [s * 0.7 for w in gen.llm.collective_rpc("gsi_get_scale") for s in w] == pytest.approx([1.0])
    assert tiny_engines.reward.max_model_len == 2048
    assert tiny_engines.reward.adapter.name == "token_classification"
    # non-embedding parameters per role, for FLOPs: big is the largest of the tiny models
    params = tiny_engines.params
    assert set(params) == {"small", "big", "reward"} and all(v > 0 for v in params.values())
    assert params["big"] > params["small"]


@pytest.mark.vllm
def test_generation_stops_at_the_delimiter(tiny_engines, contexts):
    engines = tiny_engines
    tok = engines.tokenizer
    reqs = [GenerateRequest(ctx, 8, 1000 + 100 * k, 48) for k, ctx in enumerate(contexts)]
    finishes = {FINISH_DELIMITER: 0, FINISH_EOS: 0, FINISH_LENGTH: 0}
    for gen in (engines.small, engines.big):
        out = gen.generate(reqs)
        assert [len(row) for row in out] == [8] * len(reqs)
        for row in out:
            for step in row:
                finishes[step.finish] += 1
                pieces = [tok.decode([t]) for t in step.token_ids]
                assert step.logprob < 0 and math.isfinite(step.logprob)
                if step.finish == FINISH_DELIMITER:
                    assert DELIM in pieces[-1], pieces
                    assert not any(DELIM in p for p in pieces[:-1]), pieces
                    assert step.text.endswith(pieces[-1]) and DELIM in step.text
                    assert step.text == tok.decode(step.token_ids)
                elif step.finish == FINISH_EOS:
                    assert step.token_ids[-1] in gen.eos_token_ids
                    assert not any(DELIM in p for p in pieces[:-1])
                else:
                    assert len(step.token_ids) == 48
                    assert not any(DELIM in p for p in pieces)
                    assert not set(step.token_ids) & gen.eos_token_ids
    assert finishes[FINISH_DELIMITER] > 10, finishes  # the tiny models end most steps at a delimiter


@pytest.mark.vllm
@pytest.mark.parametrize("temperature", [0.7, 1.0])
def test_generate_logprob_equals_score_and_transformers(tiny_engines, contexts, long_contexts, tf_models,
                                                        temperature):
    """log pi of a sample, as `generate` returns it, = `score` of the same tokens = transformers' log_softmax(z/T)."""
    for role in ("small", "big"):
        gen = getattr(tiny_engines, role)
        with gen.temperature_scope(temperature):
            assert gen.temperature == temperature
            ctxs = contexts[:2] + long_contexts[:2]
            steps = gen.generate([GenerateRequest(c, 3, 77 + 10 * k, 40) for k, c in enumerate(ctxs)])
            pairs = [(c, s) for c, row in zip(ctxs, steps) for s in row]
            scored = gen.score([c for c, _ in pairs], [s.token_ids for _, s in pairs])
            other = tiny_engines.small if role == "big" else tiny_engines.big
            with other.temperature_scope(temperature):  # the other model, teacher-forced on these tokens
                cross = other.score([c for c, _ in pairs], [s.token_ids for _, s in pairs])
        assert gen.temperature == pytest.approx(0.7)  # restored
        for (ctx, step), lp in zip(pairs, scored):
            assert lp == pytest.approx(step.logprob, abs=1e-3)
            assert _tf_logprob(tf_models[role], ctx, step.token_ids, temperature) == pytest.approx(lp, abs=1e-3)
        other_role = "small" if role == "big" else "big"
        for (ctx, step), lp in zip(pairs[:4], cross[:4]):
            assert _tf_logprob(tf_models[other_role], ctx, step.token_ids, temperature) == pytest.approx(lp, abs=1e-3)
    # the temperature really changes the numbers (a switch that did nothing would pass the checks above)
    ctx, cont = contexts[0], pairs[0][1].token_ids
    lp_07 = tiny_engines.small.score([ctx], [cont])[0]
    with tiny_engines.small.temperature_scope(1.0):
        lp_10 = tiny_engines.small.score([ctx], [cont])[0]
    assert abs(lp_07 - lp_10) > 0.1
    assert lp_07 == pytest.approx(_tf_logprob(tf_models["small"], ctx, cont, 0.7), abs=1e-3)


@pytest.mark.vllm
def test_seeded_generation_is_batch_independent(tiny_engines, contexts, long_contexts):
    small = tiny_engines.small
    target = GenerateRequest(contexts[1], 4, 4242, 32)
    alone = small.generate([target])[0]
    others = [GenerateRequest(c, 5, 9000 + 10 * k, 32) for k, c in enumerate(long_contexts)]
    batched = small.generate(others[:2] + [target] + others[2:])[2]
    assert [s.token_ids for s in batched] == [s.token_ids for s in alone]
    assert [s.logprob for s in batched] == pytest.approx([s.logprob for s in alone], abs=1e-4)
    assert len({s.token_ids for s in alone}) > 1  # seed + i: the n samples differ
    # a different seed gives different samples; greedy is deterministic
    assert small.generate([GenerateRequest(contexts[1], 4, 99, 32)])[0] != alone
    g1 = small.generate([GenerateRequest(contexts[1], 2, 0, 32)], greedy=True)[0]
    g2 = small.generate([GenerateRequest(contexts[1], 1, 5, 32)] * 2, greedy=True)
    assert g1[0].token_ids == g1[1].token_ids == g2[0][0].token_ids == g2[1][0].token_ids


@pytest.mark.vllm
def test_seeded_batch_beyond_the_token_budget_survives(tiny_engines, tiny_cfg):
    """More seeded prompt tokens in one call than hardware.max_num_batched_tokens: on vLLM-CPU a seeded prefill
    split across scheduler steps kills the engine (vllm-facts §4); with chunked prefill off the scheduler keeps
    each prompt whole, and the results do not depend on the batch."""
    import random

    small = tiny_engines.small
    rng = random.Random(0)
    budget = tiny_cfg.hardware.max_num_batched_tokens
    ctxs = [[rng.randrange(3, 500) for _ in range(270)] for _ in range(budget // (270 * 8) + 2)]
    assert sum(8 * len(c) for c in ctxs) > budget
    out = small.generate([GenerateRequest(c, 8, 1000 * k, 2) for k, c in enumerate(ctxs)])
    alone = small.generate([GenerateRequest(ctxs[5], 8, 5000, 2)])[0]
    assert [s.token_ids for s in out[5]] == [s.token_ids for s in alone]
    assert small.generate([GenerateRequest(ctxs[0], 1, 0, 1)])  # the engine is still alive


@pytest.mark.vllm
def test_score_with_prefix_cache_equals_score_without(tiny_engines, long_contexts):
    big = tiny_engines.big
    conts = [big.generate([GenerateRequest(c, 1, 5 + k, 24)])[0][0].token_ids for k, c in enumerate(long_contexts)]
    # candidate continuations the engine has not seen, after contexts whose first blocks it has cached
    pairs = [(c, conts[(k + 1) % len(conts)]) for k, c in enumerate(long_contexts)]
    # one context exactly a multiple of the CPU block size (128): the first scored position ends a block
    pairs.append((long_contexts[0][:128], conts[1]))
    ctxs, cs = [p[0] for p in pairs], [p[1] for p in pairs]
    before = big.stats.cached_tokens
    warm = big.score(ctxs, cs)  # populates the cache (or hits it)
    hot = big.score(ctxs, cs)  # the same requests again: every context (and the continuation) is cached
    assert big.stats.cached_tokens - before >= 128 * len(pairs)  # the cache really was read
    big.prefix_caching = False
    try:
        cold = big.score(ctxs, cs)
    finally:
        big.prefix_caching = True
    assert warm == pytest.approx(cold, abs=1e-4)
    assert hot == pytest.approx(cold, abs=1e-4)
    # the engine's own samples, teacher-forced: generating them filled (and cached) the KV block that holds the
    # context's end and the sample's first tokens, so num_cached_tokens >= len(context): the request must be
    # resent without the cache, and still agree
    own_ctxs, own_conts = [], []
    for k, c in enumerate(long_contexts):
        ctx = c[:124]
        samples = big.generate([GenerateRequest(ctx, 4, 300 + 10 * k, 24)])[0]
        cont = max(samples, key=lambda s: len(s.token_ids)).token_ids
        if len(cont) >= 5:  # crosses the 128-token block boundary
            own_ctxs.append(ctx)
            own_conts.append(cont)
    assert own_ctxs
    resends = big.score_resends
    own = big.score(own_ctxs, own_conts)
    assert big.score_resends - resends == len(own_ctxs)
    big.prefix_caching = False
    try:
        assert own == pytest.approx(big.score(own_ctxs, own_conts), abs=1e-4)
    finally:
        big.prefix_caching = True


@pytest.mark.vllm
def test_reward_is_a_probability_per_request_and_ignores_a_trailing_delimiter(tiny_engines, tf_models):
    import torch

    reward = tiny_engines.reward
    steps = ["We add $2 + 3$.\n\n", "So the sum is $5$.\n\n", "The answer is $\\boxed{5}$."]
    reqs = [RewardRequest(PROBLEMS[0], steps[:k]) for k in (1, 2, 3)]
    reqs.append(RewardRequest(PROBLEMS[1], ["Take the square root.\n\n"]))
    values = reward.reward(reqs)
    assert len(values) == len(reqs) and all(0.0 <= v <= 1.0 for v in values)
    assert len(set(round(v, 6) for v in values)) > 1  # not a constant
    # with or without the delimiter, on the last step or on earlier ones: the same input, the same score
    flipped = [RewardRequest(r.problem, [s.rstrip("\n") if s.endswith(DELIM) else s + DELIM for s in r.steps])
               for r in reqs]
    assert reward.reward(flipped) == pytest.approx(values, abs=1e-5)
    assert reward.reward([RewardRequest(PROBLEMS[0], steps[:2] + [DELIM])]) == pytest.approx([values[1]], abs=1e-5)
    # nothing to score (a first step that is only a delimiter): EMPTY_STEP_REWARD, and the batch is unaffected
    from gsi.engines.frontend import EMPTY_STEP_REWARD

    assert reward.reward([RewardRequest(PROBLEMS[0], [DELIM]), reqs[0]]) == pytest.approx(
        [EMPTY_STEP_REWARD, values[0]], abs=1e-5)
    # the score is the sigmoid of transformers' logit at the last step's last token
    for r, v in zip(reqs, values):
        ids = reward.adapter.build(r).token_ids
        with torch.no_grad():
            logit = tf_models["reward"](torch.tensor([ids])).logits[0, -1, 0].item()
        assert v == pytest.approx(1.0 / (1.0 + math.exp(-logit)), abs=1e-4)


@pytest.mark.vllm
def test_reward_reads_the_prefix_cache(tiny_engines):
    reward = tiny_engines.reward
    long_step = "Let the number be $x$ and note that " + "the sum of the squares is even and " * 12 + "done.\n\n"
    base = [long_step, long_step.replace("even", "odd")]
    first = reward.reward([RewardRequest(PROBLEMS[2], base + ["Then the area is $6$."])])
    before = reward.stats.cached_tokens
    second = reward.reward([RewardRequest(PROBLEMS[2], base + ["Then the area is $6$.", "Done."])])
    assert reward.stats.cached_tokens - before >= 128  # the shared prefix was not recomputed
    reward.prefix_caching = False
    try:
        again = reward.reward([RewardRequest(PROBLEMS[2], base + ["Then the area is $6$.", "Done."])])
    finally:
        reward.prefix_caching = True
    assert second == pytest.approx(again, abs=1e-5)  # the prefix cache changes no reward
    assert 0 <= first[0] <= 1


@pytest.mark.vllm
def test_stats_count_tokens(tiny_engines, contexts):
    small = tiny_engines.small
    before = small.stats.as_dict()
    out = small.generate([GenerateRequest(contexts[0], 3, 31, 16)])
    after = small.stats.as_dict()
    assert after["calls"] == before["calls"] + 1 and after["requests"] == before["requests"] + 1
    assert after["prompt_tokens"] - before["prompt_tokens"] == 3 * len(contexts[0])
    assert after["generated_tokens"] - before["generated_tokens"] == sum(len(s.token_ids) for s in out[0])
    assert after["busy_s"] > before["busy_s"]
    assert set(tiny_engines.stats()) == {"small", "big", "reward"}


# ---------------------------------------------------------------------------------------------------------------
# The other PRM adapters end to end on vLLM, with tiny stand-ins of their architectures (tests/prm_standins.py)
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.vllm
def test_qwen_and_skywork_prm_adapters_on_vllm(prm_standins):
    """On the session's two PRM stand-in engines (conftest `prm_standins`: Qwen- and Skywork-architecture fakes on
    the tiny reward backbone), against a transformers forward of the same weights."""
    from transformers import AutoTokenizer

    from gsi.engines.specs import needs_custom_models
    from gsi.engines.vllm import VLLMRewardModel

    for kind, standin in prm_standins.items():
        assert standin.plan.adapter == kind  # auto-detected from config.json
    plans = {kind: standin.plan for kind, standin in prm_standins.items()}
    assert needs_custom_models(plans["skywork_prm"]) and not needs_custom_models(plans["qwen_prm"])
    reqs = [RewardRequest(PROBLEMS[0], ["We add.\n\n", "So the sum is $5$.\n\n"]),
            RewardRequest(PROBLEMS[0], ["We add."]),
            RewardRequest(PROBLEMS[1], ["$x = 7$.", "\n\n", "Done.\n\n"])]
    for kind, standin in prm_standins.items():
        adapter = (QwenPRMAdapter if kind == "qwen_prm" else SkyworkPRMAdapter)(
            AutoTokenizer.from_pretrained(standin.folder), delimiter=DELIM)
        model = VLLMRewardModel(standin.llm, adapter)
        got = model.reward(reqs)
        w, cfg = standin.weights, standin.config
        want = [fake_prm_reference(w, cfg, kind, adapter.build(r).token_ids) for r in reqs]
        assert got == pytest.approx(want, abs=1e-5), kind
        assert len(set(round(v, 5) for v in got)) == len(got)
        # the next step's request re-reads its prefix from the cache (both adapters use ALL pooling)
        long = ["We add the numbers one by one and " * 12 + "get five.\n\n"]
        model.reward([RewardRequest(PROBLEMS[0], long)])
        before = model.stats.cached_tokens
        nxt = RewardRequest(PROBLEMS[0], long + ["So the sum is $5$."])
        assert model.reward([nxt]) == pytest.approx(
            [fake_prm_reference(w, cfg, kind, adapter.build(nxt).token_ids)], abs=1e-5)
        assert model.stats.cached_tokens - before >= 128, kind
        # the prefix cache changes no reward (1e-4; token_classification: test_reward_reads_the_prefix_cache)
        cached = model.reward(reqs + [nxt])
        model.prefix_caching = False
        try:
            assert model.reward(reqs + [nxt]) == pytest.approx(cached, abs=1e-4), kind
        finally:
            model.prefix_caching = True


@pytest.mark.vllm
def test_cpu_engines_run_the_model_in_their_engine_core_process(tiny_engines):
    """On the CPU an engine is one process (gsi.engines.specs: vLLM's UniProcExecutor by class path), not an engine
    core with a worker process under it that imports torch and vLLM a second time."""
    import psutil

    cores = [p for p in psutil.Process().children(recursive=True) if p.name().startswith("VLLM::EngineCore")]
    assert len(cores) >= 3  # the session's three tiny engines (others a test may hold are CPU engines too)
    assert {core.pid: core.children() for core in cores} == {core.pid: [] for core in cores}
