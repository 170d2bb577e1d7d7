"""Tiny random-initialised Qwen2 models that stand in for the three roles on a CPU.

Built on first use into a cache folder and reused; everything comes from fixed seeds, so every machine builds
the same weights and the same tokenizer. The weights are scaled so that next-token distributions are far
from uniform (tests must be able to tell a right probability from a wrong one), and a bias on the step
delimiter and EOS makes steps end after ~10 tokens and responses after a handful of steps.

    python -m gsi.models.tiny            # build (if needed) and print the paths
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import random
import shutil
import tempfile
from pathlib import Path

from gsi.roles import ROLES

TINY_VERSION = "v1"  # bump when anything below changes what is built
SEED = 1234
VOCAB_SIZE = 1024
DELIMITER = "\n\n"

# Qwen2.5's chat template, without the tool-calling branches.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] }}"
    "{%- if not (loop.last and continue_final_message is defined and continue_final_message) %}"
    "{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# (hidden, layers, heads, kv heads, intermediate). head_dim = hidden / heads = 64: vLLM's CPU attention needs it.
SHAPES = {
    "small": (128, 2, 2, 1, 256),
    "big": (256, 3, 4, 2, 512),
    "reward": (128, 2, 2, 1, 256),
}
# Logit bias (nats, before temperature) on tokens containing the delimiter and on EOS.
DELIMITER_BIAS = 1.5
EOS_BIAS = 1.0


def cache_root() -> Path:
    if os.environ.get("GSI_CACHE_DIR"):
        return Path(os.environ["GSI_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gsi"


def tiny_dir(root: Path | None = None) -> Path:
    return (root or cache_root()) / f"tiny-{TINY_VERSION}"


def tiny_paths(root: Path | None = None) -> dict[str, Path]:
    """Build the tiny models unless they are already cached; return {role: path}."""
    base = tiny_dir(root)
    build_once(base, _build)
    return {role: base / role for role in ROLES}


def build_once(base: Path, build) -> None:
    """`build(base)` unless `base` holds a complete build (a COMPLETE file, written last).

    Several processes (tests, SLURM array jobs) may ask at once: one builds, the others wait on a lock beside it.
    """
    if not (base / "COMPLETE").exists():
        base.parent.mkdir(parents=True, exist_ok=True)
        with open(base.parent / f".{base.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (base / "COMPLETE").exists():
                build(base)


def _corpus(seed: int = SEED, n_docs: int = 3000) -> list[str]:
    """Synthetic math-flavoured text, enough for a BPE of ~1k tokens that learns '\\n\\n' and LaTeX."""
    rng = random.Random(seed)
    words = (
        "the let we find so then thus a an of is are and to for by with from number sum product value answer "
        "step solve equation triangle circle area angle point line side root integer prime factor divide "
        "multiply add subtract square cube function probability expected count ways each total because "
        "since therefore compute substitute simplify gives equals"
    ).split()
    latex = [r"\frac{%d}{%d}", r"\sqrt{%d}", r"x^{%d}", r"%d \cdot %d", r"\pi", r"\theta", r"\left( %d \right)",
             r"\boxed{%d}", r"%d + %d", r"%d - %d", r"\le %d", r"\ge %d", r"x = %d", r"y = %d"]
    docs = []
    for _ in range(n_docs):
        steps = []
        for _ in range(rng.randint(2, 6)):
            parts = []
            for _ in range(rng.randint(4, 14)):
                r = rng.random()
                if r < 0.6:
                    parts.append(rng.choice(words))
                elif r < 0.8:
                    parts.append(str(rng.randint(0, 999)))
                else:
                    pattern = rng.choice(latex)
                    args = tuple(rng.randint(1, 99) for _ in range(pattern.count("%d")))
                    parts.append("$" + (pattern % args) + "$")
            steps.append(" ".join(parts).capitalize() + rng.choice([".", ":", "."]))
        answer = rng.randint(0, 999)
        steps.append(f"The answer is $\\boxed{{{answer}}}$.")
        docs.append(DELIMITER.join(steps))
    return docs


def build_tokenizer(out: Path, extra_docs: list[str] | None = None):
    """A byte-level BPE trained on _corpus() (plus extra_docs, e.g. the toy world's own text), with Qwen2's
    normaliser, split regex and chat template."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    # The same normaliser and split regex as transformers' Qwen2Tokenizer, which re-installs them on load:
    # anything else would make the reloaded tokenizer give different ids.
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus() + list(extra_docs or []), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS[1:],
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.model_max_length = 4096
    fast.save_pretrained(out)
    # Record the Qwen2 tokenizer class so that AutoTokenizer loads it the way it loads the real models.
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "Qwen2Tokenizer"
    cfg["chat_template"] = CHAT_TEMPLATE
    cfg_path.write_text(json.dumps(cfg, indent=2))
    return AutoTokenizer.from_pretrained(out)


def _init_weights(model, role: str, tokenizer, seed: int) -> None:
    """Large-scale random weights with a constant 'sentinel' residual dimension that carries the logit biases.

    Dimension 0 of every token embedding is a constant and no layer writes to it, so after the final RMSNorm
    it is a positive constant-ish feature; lm_head column 0 turns it into a per-token bias (delimiter, EOS).
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    hidden = model.config.hidden_size
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.fill_(1.0) if "norm" in name else p.zero_()
                continue
            fan_in = p.shape[1]
            std = 1.0 if "embed_tokens" in name else 1.0 / fan_in ** 0.5
            if name.endswith("lm_head.weight"):
                std = 3.0 / hidden ** 0.5  # logits with a std of ~3 nats: peaked, far from uniform
            if name.endswith("score.weight"):
                std = 1.5 / hidden ** 0.5  # rewards spread over (0, 1)
            p.copy_(torch.randn(p.shape, generator=g) * std)
        emb = model.get_input_embeddings().weight
        emb[:, 0] = 4.0
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight[0, :] = 0.0
            layer.mlp.down_proj.weight[0, :] = 0.0
        if role != "reward":
            head = model.lm_head.weight
            head[:, 0] = 0.0
            # After the final norm, the sentinel feature is about 4 / rms(residual) ~ 1.5-3.5; aim at that scale.
            h0 = 2.5
            vocab = tokenizer.get_vocab()
            for token, idx in vocab.items():
                if DELIMITER in tokenizer.convert_tokens_to_string([token]):
                    head[idx, 0] = DELIMITER_BIAS / h0
            head[tokenizer.eos_token_id, 0] = EOS_BIAS / h0
            # Tokens the tokenizer treats as control markers never appear in text.
            for tok in ("<|endoftext|>", "<|im_start|>"):
                head[tokenizer.convert_tokens_to_ids(tok), :] = 0.0
                head[tokenizer.convert_tokens_to_ids(tok), 0] = -20.0 / h0


def _build(base: Path) -> None:
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM, Qwen2ForTokenClassification

    tmp = Path(tempfile.mkdtemp(prefix=".tiny-build-", dir=base.parent))
    try:
        tok = build_tokenizer(tmp / "_tokenizer")
        vocab = len(tok)
        for i, role in enumerate(ROLES):
            hidden, layers, heads, kv, inter = SHAPES[role]
            cfg = Qwen2Config(
                vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                num_key_value_heads=kv, intermediate_size=inter, max_position_embeddings=4096,
                max_window_layers=layers, tie_word_embeddings=False, rope_theta=10000.0,
                bos_token_id=None, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                torch_dtype="float32",
            )
            torch.manual_seed(SEED + i)
            if role == "reward":
                cfg.num_labels = 1
                model = Qwen2ForTokenClassification(cfg)
            else:
                model = Qwen2ForCausalLM(cfg)
            _init_weights(model, role, tok, SEED + 100 * (i + 1))
            model = model.to(torch.float32).eval()
            out = tmp / role
            model.save_pretrained(out, safe_serialization=True)
            tok.save_pretrained(out)
            if role != "reward":
                GenerationConfig(eos_token_id=[tok.eos_token_id], pad_token_id=tok.pad_token_id,
                                 do_sample=True, temperature=0.7).save_pretrained(out)
        shutil.rmtree(tmp / "_tokenizer")
        (tmp / "COMPLETE").write_text(fingerprint(tmp) + "\n")
        if base.exists():
            shutil.rmtree(base)
        os.replace(tmp, base)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def fingerprint(base: Path) -> str:
    """A hash of every weight and tokenizer file: equal on every machine when the build is deterministic."""
    h = hashlib.sha256()
    for role in ROLES:
        for name in ("model.safetensors", "tokenizer.json"):
            h.update((base / role / name).read_bytes())
    return h.hexdigest()


if __name__ == "__main__":
    for role, path in tiny_paths().items():
        print(f"{role:7s} {path}")
