"""The tiny random models: built deterministically, reloaded offline, usable through transformers."""

import os

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForTokenClassification, AutoTokenizer

from gsi.models import tiny


@pytest.fixture(scope="module")
def paths():
    return tiny.tiny_paths()


def test_tokenizer_reloads_with_identical_ids(paths):
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(str(paths["small"] / "tokenizer.json"))
    tok = AutoTokenizer.from_pretrained(paths["small"])
    assert type(tok).__name__ == "Qwen2Tokenizer"
    texts = tiny._corpus(seed=7, n_docs=100) + ["Café naïve \u00e9\u0301 $\\frac{1}{2}$\n\n\n  x", "don't 12345"]
    for text in texts:
        assert tok(text, add_special_tokens=False)["input_ids"] == raw.encode(text, add_special_tokens=False).ids
    # The step delimiter is a token of its own, and the chat template renders Qwen's ChatML.
    assert "\n\n" in tok.decode(tok("a\n\nb")["input_ids"][1:2])
    rendered = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert rendered == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_models_reload_offline_and_generate(paths, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tok = AutoTokenizer.from_pretrained(paths["small"])
    ids = tok("Let x be 3.", return_tensors="pt").input_ids
    for role in ("small", "big"):
        model = AutoModelForCausalLM.from_pretrained(paths[role])
        torch.manual_seed(0)
        out = model.generate(ids, max_new_tokens=20, do_sample=True, temperature=0.7, pad_token_id=tok.pad_token_id)
        text = tok.decode(out[0, ids.shape[1]:])
        assert out.shape[1] > ids.shape[1] and len(text) > 0
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0, -1], -1)
        # Far from uniform: the top token has many times the uniform probability.
        assert logp.max().exp() > 20 / len(tok)
    reward = AutoModelForTokenClassification.from_pretrained(paths["reward"])
    with torch.no_grad():
        scores = torch.sigmoid(reward(ids).logits[0, :, 0])
    assert scores.shape == (ids.shape[1],) and 0 < scores.min() and scores.max() < 1
    assert scores.std() > 0.05  # rewards spread over (0, 1): methods can tell steps apart


def test_small_and_big_differ_but_share_tokenizer(paths):
    a = (paths["small"] / "tokenizer.json").read_text()
    b = (paths["big"] / "tokenizer.json").read_text()
    assert a == b
    assert (paths["small"] / "model.safetensors").read_bytes() != (paths["big"] / "model.safetensors").read_bytes()


def test_build_is_deterministic(paths, tmp_path):
    other = tiny.tiny_paths(tmp_path)
    assert tiny.fingerprint(other["small"].parent) == tiny.fingerprint(paths["small"].parent)
    # A second call reuses the cache instead of rebuilding.
    stamp = os.stat(other["small"] / "model.safetensors").st_mtime_ns
    tiny.tiny_paths(tmp_path)
    assert os.stat(other["small"] / "model.safetensors").st_mtime_ns == stamp
