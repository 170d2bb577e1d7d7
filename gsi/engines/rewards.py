"""Process-reward-model adapters: how each PRM wants (problem, steps) laid out, and how to read its score.

An adapter turns a `RewardRequest` into the token ids its PRM was trained on, names the vLLM pooling request that
scores them, and turns the pooled rows into one probability in [0, 1] for the request's LAST step. The engine
(`gsi.engines.frontend.PRMRewardModel`, over gsi.engines.vllm or gsi.engines.remote) does the batching, the prefix
cache and the accounting; everything here is plain Python over a Hugging Face tokenizer, so it is unit-tested
without vLLM.

Shared rules (methods.md, "r(y)"):
- The steps are split on the step delimiter and stripped; empty steps are dropped, so a step scores the same
  whether or not its text ends with the delimiter, and no PRM ever scores an empty trailing step (the published
  GSI code's off-by-one).
- Each step is tokenised on its own and the ids are concatenated: the input of step k+1 extends the input of step
  k token for token, so a pooling runner with prefix caching re-reads only the new step.

Adapters, chosen by `model.reward.adapter` (`auto`: from config.json's `architectures`):
- `token_classification`: a generic token-classification PRM (`*ForTokenClassification`, e.g. the tiny
  model). Input: the chat-rendered problem (the generators' system prompt, so all three roles read the same
  context), then each step followed by the delimiter's tokens. Score at the step's last token (its delimiter):
  sigmoid for one label, the last class's softmax probability for several.
- `qwen_prm`: Qwen/Qwen2.5-Math-PRM-7B (`Qwen2ForProcessRewardModel`). Input as its model card builds it:
  system prompt, user = problem, assistant = steps each followed by `<extra_0>`. The score is softmax(two class
  logits)[1] at the last tag. The card's trailing `<|im_end|>\\n` is left out: it comes after the last tag and
  cannot change any tag's score (causal model), so the input ends with the last tag, and the engine uses ALL
  pooling (last row = last tag) instead of vLLM's default STEP pooling, for which vLLM turns prefix caching off.
- `lm_verifier`: a causal LM (`*ForCausalLM`) as a verifier, e.g. the toy world's PRM (the big run's final
  weights, gsi/models/toy_train.py). Input as `token_classification`'s; served by vLLM's generate runner and
  teacher-forced (`prompt_logprobs`, the prefix cache as the generators' `score`: gsi.engines.verifier). Score:
  exp(lowest log-prob of the last step's own tokens), i.e. the probability of the first token the verifier would
  not have written; the delimiter after the step is sent but not read.
- `skywork_prm`: Skywork/Skywork-o1-Open-PRM-Qwen-2.5-{1.5B,7B} (`Qwen2ForPrmModel`: a Qwen2 backbone with a
  scalar value head, as the RSD code serves it). Input as Skywork's `prepare_input`: BOS + problem + "\\n", then
  each step's own tokens followed by the step-token id (the last id of the delimiter's encoding). Score:
  sigmoid(value) at the last step token. vLLM 0.32 has no `Qwen2ForPrmModel`: `gsi.engines.skywork` defines one
  (backbone + `v_head.summary`) and `gsi.engines.worker` registers it in every engine process. The real weights
  are not on this machine: the layout is unit-tested against Skywork's `prepare_input`, and the model class
  end to end with a tiny stand-in checkpoint (tests/test_engines.py, run by default); the same test
  runs `qwen_prm` on a tiny `Qwen2ForProcessRewardModel`.

A request with no non-empty step at all (a first candidate that is only a delimiter) has nothing to score:
`PRMRewardModel` gives it `EMPTY_STEP_REWARD` (0.0) without a model call; `PRMAdapter.build` raises for it.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from gsi.engines.base import RewardRequest

QWEN_MATH_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."


def split_steps(steps: Sequence[str], delimiter: str) -> list[str]:
    """The PRM's view of a response: every step split on the delimiter, stripped, empty pieces dropped.

    Accepted steps keep their delimiter (methods.md), the candidate may or may not end with it, and a generated
    step can end in a token such as ".\\n\\n": none of that may create an empty step or change a step's text.
    """
    out = []
    for step in steps:
        pieces = step.split(delimiter) if delimiter else [step]
        for piece in pieces:
            piece = piece.strip()
            if piece:
                out.append(piece)
    return out


@dataclass
class PRMInput:
    """What one request sends to the PRM: token ids, and where the scores of interest sit."""

    token_ids: list[int]
    prompt_len: int  # ids before the first step (system prompt + problem)
    step_ends: list[int] = field(default_factory=list)  # index of each step's scored token (last = the candidate)


class PRMAdapter(ABC):
    """One PRM family's input layout and score read-out."""

    name: str = ""
    # config.json `architectures` this adapter knows (auto-selection and validation).
    architectures: tuple[str, ...] = ()
    # vLLM pooling task, and whether prefix caching can be used with it.
    pooling_task: str = "token_classify"
    uses_prefix_cache: bool = True
    # PoolerConfig overrides for the engine (vllm.LLM(pooler_config=...)), or None for the model's default.
    vllm_pooler_config: dict | None = None
    # vLLM runner of the reward engine: "pooling" (a scoring head), or "generate" (a verifier LM, teacher-forced
    # by gsi.engines.verifier).
    runner: str = "pooling"
    # Whether the PRM reads the generators' rendered context (their system prompt; methods.md, "Problem prompt x")
    # when model.reward.system_prompt is unset: a generic PRM trained on that layout, not a published one.
    reads_generator_prompt: bool = False

    def __init__(self, tokenizer, *, delimiter: str = "\n\n", system_prompt: str | None = None,
                 max_model_len: int | None = None):
        self.tokenizer = tokenizer
        self.delimiter = delimiter
        self.system_prompt = system_prompt if system_prompt is not None else self.default_system_prompt()
        self.max_model_len = max_model_len
        self._step_cache: dict[str, list[int]] = {}
        self._prompt_lengths: dict[str, int] = {}

    # -- layout -------------------------------------------------------------------------------------------------
    def default_system_prompt(self) -> str | None:
        return QWEN_MATH_SYSTEM_PROMPT

    def encode_text(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def encode_step(self, step: str) -> list[int]:
        """A step's own ids, followed by its separator: cached, since every later request repeats the step."""
        ids = self._step_cache.get(step)
        if ids is None:
            ids = self.encode_text(step) + self.separator_ids()
            if len(self._step_cache) > 200_000:
                self._step_cache.clear()
            self._step_cache[step] = ids
        return ids

    def render_problem(self, problem: str) -> str:
        """System prompt + user turn, ready for the assistant's first token (the chat template)."""
        messages = []
        if self.system_prompt:
            messages.append({"role": "system", "content": self.system_prompt})
        messages.append({"role": "user", "content": problem})
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def prompt_ids(self, problem: str) -> list[int]:
        return self.encode_text(self.render_problem(problem))

    def input_length(self, problem: str, steps: Sequence[str]) -> int:
        """len(build(...).token_ids) without the context-window trimming, and 0 steps allowed (the prompt
        alone): what the compute accounting charges the PRM."""
        prompt = self._prompt_lengths.get(problem)
        if prompt is None:
            if len(self._prompt_lengths) > 10_000:
                self._prompt_lengths.clear()
            prompt = self._prompt_lengths[problem] = len(self.prompt_ids(problem))
        return prompt + sum(len(self.encode_step(s)) for s in split_steps(steps, self.delimiter))

    @abstractmethod
    def separator_ids(self) -> list[int]:
        """Ids appended after each step; the score is read at the last of them."""

    def build(self, request: RewardRequest) -> PRMInput:
        steps = split_steps(request.steps, self.delimiter)
        if not steps:
            raise ValueError(f"{self.name}: a reward request needs at least one non-empty step; got {request.steps!r}")
        prompt = self.prompt_ids(request.problem)
        encoded = [self.encode_step(s) for s in steps]
        # Too long for the PRM: drop the earliest steps (never the candidate), as Skywork's own client does.
        if self.max_model_len is not None:
            total = len(prompt) + sum(map(len, encoded))
            while total > self.max_model_len and len(encoded) > 1:
                total -= len(encoded.pop(0))
            if total > self.max_model_len:
                raise ValueError(f"{self.name}: the problem and last step need {total} tokens, more than the PRM's "
                                 f"max_model_len {self.max_model_len}")
        ids = list(prompt)
        ends = []
        for step_ids in encoded:
            ids.extend(step_ids)
            ends.append(len(ids) - 1)
        return PRMInput(token_ids=ids, prompt_len=len(prompt), step_ends=ends)

    # -- read-out ------------------------------------------------------------------------------------------------
    def pooling_params(self) -> dict:
        """Keyword arguments of vLLM's PoolingParams for this adapter (raw logits: we apply the activation)."""
        params = {"use_activation": False}
        if self.uses_prefix_cache:
            params["skip_reading_prefix_cache"] = False
        return params

    @abstractmethod
    def score_rows(self, rows) -> float:
        """The probability that the last step is correct, from the rows vLLM returned (a [k, labels] array whose
        last row belongs to the last step's scored token)."""


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def _last_class_prob(row) -> float:
    vals = [float(v) for v in row]
    if len(vals) == 1:
        return _sigmoid(vals[0])
    m = max(vals)
    exps = [math.exp(v - m) for v in vals]
    return exps[-1] / sum(exps)


def _last_row(rows):
    if rows is None or len(rows) == 0:
        raise ValueError("the PRM returned no rows for a request (no scored token?)")
    last = rows[-1]
    return last.tolist() if hasattr(last, "tolist") else list(last)


class TokenClassificationAdapter(PRMAdapter):
    """Generic `*ForTokenClassification` PRM: score at each step's last token (its delimiter)."""

    name = "token_classification"
    architectures = ("Qwen2ForTokenClassification", "LlamaForTokenClassification", "MistralForTokenClassification",
                     "Qwen3ForTokenClassification")
    reads_generator_prompt = True

    def separator_ids(self) -> list[int]:
        return self.encode_text(self.delimiter)

    def score_rows(self, rows) -> float:
        # one label: sigmoid; several: probability of the last ("correct") class
        return _last_class_prob(_last_row(rows))


class QwenPRMAdapter(PRMAdapter):
    """Qwen/Qwen2.5-Math-PRM-7B: steps joined by `<extra_0>`, P(positive) at the last tag."""

    name = "qwen_prm"
    architectures = ("Qwen2ForProcessRewardModel",)
    # vLLM serves this architecture with STEP pooling (rows at the step tags only), for which it turns prefix
    # caching off: the PRM would re-read the whole response at every step. The input ends with the last step's
    # tag, so ALL pooling's last row is that tag's two logits: the same number, with prefix caching on.
    vllm_pooler_config = {"tok_pooling_type": "ALL"}
    STEP_TAG = "<extra_0>"

    def __init__(self, tokenizer, **kwargs):
        super().__init__(tokenizer, **kwargs)
        ids = self.encode_text(self.STEP_TAG)
        if len(ids) != 1 or tokenizer.convert_ids_to_tokens(ids[0]) != self.STEP_TAG:
            raise ValueError(f"qwen_prm: the tokenizer has no single token {self.STEP_TAG!r} (encodes to {ids})")
        self.step_tag_id = ids[0]

    def separator_ids(self) -> list[int]:
        return [self.step_tag_id]

    def score_rows(self, rows) -> float:
        row = _last_row(rows)
        if len(row) != 2:
            raise ValueError(f"qwen_prm: expected 2 class logits per step tag, got {len(row)}")
        return _last_class_prob(row)


class SkyworkPRMAdapter(PRMAdapter):
    """Skywork-o1-Open-PRM (Qwen2.5 backbone + value head): BOS + problem + "\\n", steps + step token, sigmoid."""

    name = "skywork_prm"
    architectures = ("Qwen2ForPrmModel",)

    def __init__(self, tokenizer, **kwargs):
        super().__init__(tokenizer, **kwargs)
        ids = self.encode_text(self.delimiter)
        if not ids:
            raise ValueError("skywork_prm: the step delimiter encodes to no tokens")
        self.step_token_id = ids[-1]  # Skywork's `tokenizer.encode(step_token)[-1]`

    def default_system_prompt(self) -> str | None:
        return None  # Skywork's PRM reads no chat template and no system prompt

    def prompt_ids(self, problem: str) -> list[int]:
        bos = getattr(self.tokenizer, "bos_token", None)
        if bos:
            return self.encode_text(bos + problem + "\n")
        bos_id = getattr(self.tokenizer, "bos_token_id", None)
        prefix = [bos_id] if isinstance(bos_id, int) and bos_id >= 0 else []
        return prefix + self.encode_text(problem + "\n")

    def separator_ids(self) -> list[int]:
        return [self.step_token_id]

    def score_rows(self, rows) -> float:
        row = _last_row(rows)
        if len(row) != 1:
            raise ValueError(f"skywork_prm: expected one value per token, got {len(row)}")
        return _sigmoid(float(row[0]))


class LMVerifierAdapter(PRMAdapter):
    """A causal LM as a verifier (the toy world's PRM): the generators' layout, each step followed by the
    delimiter's tokens, teacher-forced (gsi.engines.verifier). A step's reward is the lowest probability the LM
    gives any of the step's own tokens: it flags the first token the verifier would not have written. The
    delimiter after the step is forced (so the next step's request extends this one in the prefix cache) but not
    read: after the last step the LM expects EOS, not a delimiter, and that says nothing about the step."""

    name = "lm_verifier"
    architectures = ("Qwen2ForCausalLM", "LlamaForCausalLM", "MistralForCausalLM", "Qwen3ForCausalLM")
    runner = "generate"
    reads_generator_prompt = True

    def separator_ids(self) -> list[int]:
        return self.encode_text(self.delimiter)

    def scored_start(self, x: PRMInput) -> int:
        """Where the last step's ids begin in x.token_ids: the teacher-forced continuation is x.token_ids[start:]."""
        return x.step_ends[-2] + 1 if len(x.step_ends) > 1 else x.prompt_len

    def score_rows(self, rows) -> float:
        """rows: the log-probs of the last step's ids and its separator's, in order (the continuation's)."""
        vals = [float(v) for v in rows]
        own = vals[: len(vals) - len(self.separator_ids())]
        if not own:
            raise ValueError(f"lm_verifier: no log-prob for the step's own tokens (got {len(vals)} values)")
        return math.exp(min(own))


ADAPTERS: dict[str, type[PRMAdapter]] = {
    cls.name: cls for cls in (TokenClassificationAdapter, QwenPRMAdapter, SkyworkPRMAdapter, LMVerifierAdapter)
}


def architectures_of(model_dir: str | Path) -> list[str]:
    """`architectures` from a local model folder's config.json ([] when there is none)."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        return []
    return list(json.loads(path.read_text()).get("architectures") or [])


def adapter_for_architectures(architectures: Sequence[str]) -> str | None:
    for arch in architectures:
        for name, cls in ADAPTERS.items():
            if arch in cls.architectures:
                return name
    # A token-classification head on another backbone: the generic adapter reads it the same way; a causal LM
    # can only be a verifier.
    for arch in architectures:
        if arch.endswith("ForTokenClassification"):
            return TokenClassificationAdapter.name
        if arch.endswith("ForCausalLM"):
            return LMVerifierAdapter.name
    return None


def resolve_adapter_name(adapter: str, architectures: Sequence[str] | None) -> str:
    """The adapter to use, or ValueError naming `model.reward.adapter`.

    `architectures` is None when unknown (a hub id not in the local cache): an explicit adapter is trusted.
    """
    if adapter != "auto" and adapter not in ADAPTERS:
        raise ValueError(f"model.reward.adapter={adapter!r} is not a known PRM adapter; choose one of "
                         f"{['auto', *ADAPTERS]}")
    if architectures is None:
        if adapter == "auto":
            raise ValueError("model.reward.adapter=auto needs the reward model's config.json to pick an adapter, "
                             "and none is available locally: set model.reward.adapter to one of "
                             f"{list(ADAPTERS)}")
        return adapter
    detected = adapter_for_architectures(architectures)
    if adapter == "auto":
        if detected is None:
            raise ValueError(f"model.reward.adapter=auto: no PRM adapter knows the reward model's architecture "
                             f"{list(architectures)}; known: "
                             f"{ {n: list(c.architectures) for n, c in ADAPTERS.items()} }")
        return detected
    known = ADAPTERS[adapter].architectures
    suffix = {TokenClassificationAdapter.name: "ForTokenClassification", LMVerifierAdapter.name: "ForCausalLM"}
    generic_ok = adapter in suffix and any(a.endswith(suffix[adapter]) for a in architectures)
    if not generic_ok and not any(a in known for a in architectures):
        raise ValueError(f"model.reward.adapter={adapter!r} expects an architecture in {list(known)}, but the reward "
                         f"model's config.json says {list(architectures)}")
    return adapter


def make_adapter(name: str, tokenizer, **kwargs) -> PRMAdapter:
    return ADAPTERS[name](tokenizer, **kwargs)
