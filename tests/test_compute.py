"""FLOPs accounting: the parameter counts of the tiny models against a hand count from their shapes, and the
summary's 2·P·(generated + context) per role."""

from __future__ import annotations

import json
import math
import struct

import pytest

from gsi.reporting.compute import flops_per_token, non_embedding_params
from gsi.models import tiny
from gsi.rundir.results import summarize


def hand_count(hidden: int, layers: int, heads: int, kv_heads: int, inter: int, vocab: int, head: str) -> int:
    """Qwen2, counted by hand: q/k/v projections with biases, o without; SwiGLU MLP (gate, up, down) without
    biases; two RMSNorm weights per layer and a final one; then the output head. The input embedding is a
    lookup, not a matmul: not counted."""
    head_dim = hidden // heads
    q = hidden * heads * head_dim + heads * head_dim
    k = v = hidden * kv_heads * head_dim + kv_heads * head_dim
    o = heads * head_dim * hidden
    mlp = 3 * hidden * inter
    norms = 2 * hidden
    total = layers * (q + k + v + o + mlp + norms) + hidden
    if head == "lm_head":  # causal LM: hidden -> vocab, no bias (tie_word_embeddings=False: its own matrix)
        return total + hidden * vocab
    if head == "score":  # token classification, num_labels = 1: hidden -> 1, with a bias
        return total + hidden * 1 + 1
    raise ValueError(head)


@pytest.fixture(scope="module")
def paths():
    return tiny.tiny_paths()


def safetensors_shapes(path) -> dict[str, list[int]]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    return {k: v["shape"] for k, v in header.items() if k != "__metadata__"}


@pytest.mark.parametrize("role", ["small", "big", "reward"])
def test_non_embedding_params_equal_a_hand_count(paths, role):
    hidden, layers, heads, kv, inter = tiny.SHAPES[role]
    config = json.loads((paths[role] / "config.json").read_text())
    vocab = config["vocab_size"]
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"],
            config["num_key_value_heads"], config["intermediate_size"]) == tiny.SHAPES[role]
    head = "score" if role == "reward" else "lm_head"
    want = hand_count(hidden, layers, heads, kv, inter, vocab, head)
    assert non_embedding_params(str(paths[role])) == want
    assert flops_per_token(non_embedding_params(str(paths[role]))) == 2 * want

    # The saved weights agree: every tensor in the file except the input embedding, and the score head's bias is
    # really there (a head without one would be 1 parameter fewer).
    shapes = safetensors_shapes(paths[role] / "model.safetensors")
    assert shapes["model.embed_tokens.weight"] == [vocab, hidden]
    assert sum(math.prod(s) for k, s in shapes.items() if "embed_tokens" not in k) == want
    if role == "reward":
        assert shapes["score.weight"] == [1, hidden] and shapes["score.bias"] == [1]
    else:
        assert shapes["lm_head.weight"] == [vocab, hidden] and "lm_head.bias" not in shapes


def test_hand_count_small_by_the_numbers():
    # small: hidden 128, 2 layers, 2 heads of 64, 1 KV head, MLP 256. Per layer: q 128*128+128, k and v 128*64+64
    # each, o 128*128, MLP 3*128*256, norms 2*128 -> 147968; two layers and the final norm -> 296064.
    assert hand_count(128, 2, 2, 1, 256, vocab=0, head="lm_head") == 296064
    assert hand_count(128, 2, 2, 1, 256, vocab=558, head="lm_head") == 296064 + 128 * 558
    assert hand_count(128, 2, 2, 1, 256, vocab=558, head="score") == 296064 + 129


def _record(small, big, reward):
    return {"correct": True, "steps": 1, "accepted_steps": 1, "draft_tokens": 0, "accepted_draft_tokens": 0,
            "stop_reason": "eos",
            "tokens": {"small": dict(zip(("generated", "context"), small)),
                       "big": dict(zip(("generated", "context"), big)),
                       "reward": dict(zip(("generated", "context"), reward))}}


def test_summarize_turns_tokens_into_flops():
    params = {"small": 1_543_714_304, "big": 7_070_619_136, "reward": 7_069_494_785}
    records = [_record((120, 300), (7, 950), (0, 480)), _record((64, 210), (0, 640), (0, 300)),
               _record((0, 0), (33, 12), (0, 0))]
    s = summarize(records, flops_per_token={r: flops_per_token(p) for r, p in params.items()}, has_acceptance=True)
    tokens = {"small": 120 + 300 + 64 + 210, "big": 7 + 950 + 640 + 33 + 12, "reward": 480 + 300}
    for role in ("small", "big", "reward"):
        assert s["tokens"][role]["generated"] + s["tokens"][role]["context"] == tokens[role]
        assert s["flops"][role] == 2 * params[role] * tokens[role]
    assert s["flops"]["total"] == sum(2 * params[r] * tokens[r] for r in params)
    # A role that did nothing costs nothing, whatever its size.
    s = summarize([_record((5, 5), (0, 0), (0, 0))], flops_per_token={r: 2.0 * p for r, p in params.items()},
                  has_acceptance=False)
    assert s["flops"]["big"] == s["flops"]["reward"] == 0
    assert s["flops"]["total"] == s["flops"]["small"] == 20 * params["small"]


def test_run_reports_flops_from_the_records(tmp_path):
    """Through the run wiring (exact-table engines with set parameter counts): summary.json's FLOPs are
    2·P·tokens summed over results.jsonl."""
    from experiments.synthetic import PARAMS, synthetic_run

    summary = synthetic_run(["method=gsi", "method.n=3", "beta=2"], tmp_path / "run", n_problems=10)
    records = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert summary["params"] == PARAMS
    for role in ("small", "big", "reward"):
        tokens = sum(r["tokens"][role]["generated"] + r["tokens"][role]["context"] for r in records)
        assert tokens > 0
        assert summary["flops"][role] == 2 * PARAMS[role] * tokens


def test_tied_output_head_is_counted(paths, tmp_path):
    """A causal LM whose lm_head is tied to its input embedding still pays the head's matmul every token:
    named_parameters() lists the shared matrix only as embed_tokens, and P must add it back."""
    hidden, layers, heads, kv, inter = tiny.SHAPES["small"]
    config = json.loads((paths["small"] / "config.json").read_text())
    vocab = config["vocab_size"]
    untied = non_embedding_params(str(paths["small"]))
    config["tie_word_embeddings"] = True
    (tmp_path / "config.json").write_text(json.dumps(config))
    tied = non_embedding_params(str(tmp_path))
    assert tied == untied == hand_count(hidden, layers, heads, kv, inter, vocab, "lm_head")
    assert tied - hand_count(hidden, layers, heads, kv, inter, 0, "lm_head") == hidden * vocab
