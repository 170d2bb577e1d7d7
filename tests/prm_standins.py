"""Tiny stand-ins of the PRM architectures that have adapters of their own (Qwen2.5-Math-PRM's `qwen_prm`,
Skywork-PRM's `skywork_prm`) on the tiny reward model's backbone, and their vLLM engines. conftest's `prm_standins`
fixture starts both engines once per session (in parallel, with the tiny test engines' small KV cache) for
test_engines (the adapters against a transformers forward) and test_paper_settings (the RSD paper's preset end to
end with the Skywork stand-in as its PRM)."""

from __future__ import annotations

import copy
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from omegaconf import OmegaConf

from gsi.models.tiny import tiny_paths

KINDS = ("qwen_prm", "skywork_prm")


def fake_prm(out: Path, kind: str):
    """A tiny checkpoint with Qwen2.5-Math-PRM's (`qwen_prm`) or Skywork-PRM's (`skywork_prm`) architecture and
    head, on the tiny reward model's backbone; returns (weights, config) for a reference forward."""
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer

    shutil.copytree(tiny_paths()["reward"], out)
    cfg = json.loads((out / "config.json").read_text())
    w = load_file(out / "model.safetensors")
    for k in ("score.weight", "score.bias"):
        w.pop(k, None)
    g = torch.Generator().manual_seed(7)
    h = cfg["hidden_size"]
    if kind == "qwen_prm":
        tok = AutoTokenizer.from_pretrained(out)
        tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>", "<extra_0>"]})
        tok.save_pretrained(out)
        vocab = 576  # room for <extra_0>
        emb = w["model.embed_tokens.weight"]
        extra = torch.randn(vocab - emb.shape[0], h, generator=g)
        extra[:, 0] = 4.0
        w["model.embed_tokens.weight"] = torch.cat([emb, extra])
        w["score.0.weight"] = torch.randn(h, h, generator=g) / h ** 0.5
        w["score.0.bias"] = torch.randn(h, generator=g) * 0.1
        w["score.2.weight"] = torch.randn(2, h, generator=g) * 2 / h ** 0.5
        w["score.2.bias"] = torch.zeros(2)
        cfg.update(architectures=["Qwen2ForProcessRewardModel"], num_labels=2, vocab_size=vocab,
                   id2label={"0": "LABEL_0", "1": "LABEL_1"}, label2id={"LABEL_0": 0, "LABEL_1": 1})
    else:
        w["lm_head.weight"] = torch.randn(cfg["vocab_size"], h, generator=g)
        w["v_head.summary.weight"] = torch.randn(1, h, generator=g) * 1.5 / h ** 0.5
        w["v_head.summary.bias"] = torch.tensor([0.3])
        cfg["architectures"] = ["Qwen2ForPrmModel"]
        cfg.pop("id2label", None)
        cfg.pop("label2id", None)
    (out / "config.json").write_text(json.dumps(cfg))
    save_file({k: v.contiguous() for k, v in w.items()}, out / "model.safetensors")
    return w, cfg


def fake_prm_reference(w, cfg, kind: str, ids) -> float:
    import torch
    from transformers import Qwen2Config, Qwen2Model

    backbone = Qwen2Model(Qwen2Config(**{k: v for k, v in cfg.items() if k != "architectures"})).eval()
    backbone.load_state_dict({k[len("model."):]: v for k, v in w.items() if k.startswith("model.")})
    with torch.no_grad():
        hidden = backbone(torch.tensor([ids])).last_hidden_state[0, -1].double()
        if kind == "qwen_prm":
            x = torch.relu(hidden @ w["score.0.weight"].double().T + w["score.0.bias"].double())
            logits = x @ w["score.2.weight"].double().T + w["score.2.bias"].double()
            return float(torch.softmax(logits, -1)[1])
        value = hidden @ w["v_head.summary.weight"].double()[0] + w["v_head.summary.bias"].double()[0]
        return float(torch.sigmoid(value))


@dataclass
class Standin:
    """One stand-in: its checkpoint folder, its weights and config (for `fake_prm_reference`), the run config's
    validated plan (reward path = the folder, adapter auto-detected) and its started `vllm.LLM`."""

    folder: Path
    weights: dict
    config: dict
    plan: Any
    llm: Any


def start_standins(tiny_cfg, root: Path) -> tuple[dict[str, Standin], Callable[[], None]]:
    """Build both stand-ins under `root` and start their engines (in parallel); returns them and their closer."""
    from gsi.engines.launch import shutdown_llms, start_llms
    from gsi.engines.plan import validate
    from gsi.engines.specs import engine_specs
    from gsi.engines.worker import register_custom_models

    built, specs = {}, []
    for kind in KINDS:
        folder = root / kind
        weights, config = fake_prm(folder, kind)
        cfg = copy.deepcopy(tiny_cfg)
        OmegaConf.update(cfg, "model.reward.path", str(folder), merge=False)
        OmegaConf.update(cfg, "model.reward.adapter", "auto", merge=False)
        plan = validate(cfg, check_devices=False)
        (spec,) = engine_specs(cfg, plan, roles=("reward",))
        spec.role = kind
        specs.append(spec)
        built[kind] = (folder, weights, config, plan)
    register_custom_models()
    llms, _ = start_llms(specs)
    standins = {kind: Standin(*built[kind], llm=llms[kind]) for kind in KINDS}
    return standins, lambda: shutdown_llms(list(llms.values()))
