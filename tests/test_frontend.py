"""The generators' and the PRM's front end (gsi.engines.frontend) on a scripted transport (no vLLM, no server, ~1 s):
what each request asks for, how answers are read, and when a teacher-forced request is resent without the prefix
cache. The two real transports are checked end to end in test_engines.py (in process) and test_remote.py (HTTP)."""

from __future__ import annotations

import math

import pytest

from gsi.engines.base import FINISH_DELIMITER, FINISH_EOS, FINISH_LENGTH, GenerateRequest, RewardRequest
from gsi.engines.frontend import (EMPTY_STEP_REWARD, PRMRewardModel, Pooled, Sampled, StepGenerator,
                                  TeacherForced, delimiter_token_ids)
from gsi.engines.rewards import make_adapter
from gsi.models.tiny import DELIMITER, tiny_paths


class Broken(RuntimeError):
    pass


class Scripted(StepGenerator):
    """Answers from `sample_answer(sample)` and `force_answer(prompt, use_cache)`; records what it was sent."""

    def __init__(self, tokenizer, sample_answer=None, force_answer=None):
        super().__init__("big", tokenizer, delimiter=DELIMITER, eos_token_ids=[tokenizer.eos_token_id])
        self.max_model_len = 40
        self.temperature = 0.7
        self.sample_answer, self.force_answer = sample_answer, force_answer
        self.sent, self.forced = [], []

    def _sample(self, samples, *, greedy):
        self.sent += [(s, greedy) for s in samples]
        return [self.sample_answer(s) for s in samples]

    def _teacher_force(self, prompts, *, use_cache):
        self.forced += [(list(p), use_cache) for p in prompts]
        return [self.force_answer(p, use_cache) for p in prompts]

    def _failure(self, message):
        return Broken(message)


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_paths()["small"])


def _plain_token(tok, forbidden) -> int:
    return next(i for i in range(len(tok)) if i not in forbidden)


def test_each_sample_is_its_own_seeded_request_capped_by_the_context_window(tok):
    gen = Scripted(tok, sample_answer=lambda s: Sampled((), [], 0))
    gen.generate([GenerateRequest(context=[1] * 10, n=3, seed=100, max_tokens=8),
                  GenerateRequest(context=[2] * 35, n=1, seed=7, max_tokens=8)])
    assert [(s.seed, s.max_tokens, len(s.context)) for s, _ in gen.sent] == [(100, 8, 10), (101, 8, 10),
                                                                             (102, 8, 10), (7, 5, 35)]
    gen.sent.clear()
    gen.generate([GenerateRequest(context=[1] * 10, n=2, seed=100, max_tokens=8)], greedy=True)
    assert [(s.seed, greedy) for s, greedy in gen.sent] == [(None, True), (None, True)]
    for bad in (GenerateRequest(context=[], n=1, seed=0, max_tokens=4),
                GenerateRequest(context=[1] * 40, n=1, seed=0, max_tokens=4),
                GenerateRequest(context=[1], n=0, seed=0, max_tokens=4)):
        with pytest.raises(ValueError, match=r"big\.generate: request 0"):
            gen.generate([bad])


def test_steps_sum_their_log_probs_and_say_why_they_stopped(tok):
    delim = sorted(delimiter_token_ids(tok, DELIMITER))[0]
    eos = tok.eos_token_id
    plain = _plain_token(tok, set(delimiter_token_ids(tok, DELIMITER)) | {eos})
    answers = {0: Sampled((plain, delim), [-0.5, -0.25], 3), 1: Sampled((plain, eos), [-1.0, -2.0], 0),
               2: Sampled((plain, plain), [-0.125, -0.125], 1)}
    gen = Scripted(tok, sample_answer=lambda s: answers[s.seed])
    before = gen.stats.as_dict()
    (steps,) = gen.generate([GenerateRequest(context=[5, 6, 7], n=3, seed=0, max_tokens=2)])
    assert [(s.finish, s.logprob) for s in steps] == [(FINISH_DELIMITER, -0.75), (FINISH_EOS, -3.0),
                                                      (FINISH_LENGTH, -0.25)]
    assert steps[0].text == tok.decode([plain, delim], skip_special_tokens=True, clean_up_tokenization_spaces=False)
    after = gen.stats.as_dict()
    assert after["prompt_tokens"] - before["prompt_tokens"] == 9
    assert after["cached_tokens"] - before["cached_tokens"] == 4
    assert after["generated_tokens"] - before["generated_tokens"] == 6
    # a sampled token without its log-prob is the transport's failure, not a step
    gen = Scripted(tok, sample_answer=lambda s: Sampled((plain, delim), [-0.5, None], 0))
    with pytest.raises(Broken, match=f"no log-prob for sampled token {delim} at 1"):
        gen.generate([GenerateRequest(context=[5], n=1, seed=0, max_tokens=2)])


def test_score_reads_only_positions_past_the_cache_and_resends_garbage_without_it(tok):
    table = {pos: -0.5 * pos for pos in range(40)}

    def answer(prompt, use_cache):
        if prompt[0] == 1 and use_cache:  # the cache covers the whole context: unusable
            return TeacherForced(cached=3, logprob_at=lambda pos: table[pos])
        if prompt[0] == 2 and use_cache:  # a garbage entry (a positive "log-prob")
            return TeacherForced(cached=1, logprob_at=lambda pos: 0.5)
        return TeacherForced(cached=1 if use_cache else 0, logprob_at=lambda pos: table[pos])

    gen = Scripted(tok, force_answer=answer)
    scores = gen.score([[1, 0, 0], [2, 0, 0], [3, 0, 0], [4]], [[9, 9], [9], [9, 9, 9], []])
    assert scores == [-0.5 * (3 + 4), -0.5 * 3, -0.5 * (3 + 4 + 5), 0.0]
    assert gen.score_resends == 2
    assert [(p[0], cache) for p, cache in gen.forced] == [(1, True), (2, True), (3, True), (1, False), (2, False)]
    gen.prefix_caching = False
    gen.forced.clear()
    gen.score([[3, 0]], [[9]])
    assert gen.forced == [([3, 0, 9], False)]
    # still garbage without the cache: the transport's failure
    gen = Scripted(tok, force_answer=lambda prompt, use_cache: TeacherForced(0, lambda pos: math.nan))
    with pytest.raises(Broken, match="no valid prompt log-probs for 1 requests even without the prefix cache"):
        gen.score([[1, 2]], [[3]])
    with pytest.raises(ValueError, match=r"big\.score: request 0 has 41 tokens"):
        gen.score([[1] * 40], [[2]])


class ScriptedPRM(PRMRewardModel):
    def __init__(self, adapter, rows):
        super().__init__(adapter, 512)
        self.rows, self.calls = rows, 0

    def _pool(self, inputs):
        self.calls += 1
        return [Pooled(self.rows(x), cached=2) for x in inputs]

    def _failure(self, message):
        return Broken(message)


def test_reward_scores_the_last_step_and_skips_empty_requests(tok):
    import torch

    adapter = make_adapter("token_classification", tok, delimiter=DELIMITER, system_prompt="")
    prm = ScriptedPRM(adapter, lambda x: torch.zeros(len(x.token_ids)))  # one logit per token: sigmoid(0)
    assert adapter.max_model_len == 512  # the engine's window, unless the adapter has its own
    assert prm.reward([RewardRequest("1+1?", [DELIMITER])]) == [EMPTY_STEP_REWARD] and prm.calls == 0
    assert prm.reward([RewardRequest("1+1?", [DELIMITER]), RewardRequest("1+1?", ["2" + DELIMITER])]) == [
        EMPTY_STEP_REWARD, 0.5]
    assert prm.calls == 1 and prm.stats.cached_tokens == 2
    prm = ScriptedPRM(adapter, lambda x: torch.full((len(x.token_ids), 2), math.nan))
    with pytest.raises(Broken, match="token_classification produced nan, not a probability"):
        prm.reward([RewardRequest("1+1?", ["2"])])
