"""A problem's progress through the step loop: its context, its chosen steps and its accounting.

Token accounting (what `flops` in summary.json is made of), per problem and per role:
- `tokens`: the work of an engine with a prefix cache. A role reads each token of the problem's context once: a
  high-water mark per role (`read`, in that role's own tokens: the PRM renders problem and steps its own way)
  says how far into the context it has read, and only context beyond it is charged. The n candidates of one
  request share their context; each candidate's own tokens are charged (as `generated` when the role sampled
  them, as `context` when it read them: teacher forcing, PRM scoring). When a candidate becomes the next step,
  every role that already read it has it in its cache (its mark moves past it).
- `tokens_nocache`: every request's whole context, every time (each candidate re-reads the context for teacher
  forcing and the PRM): the cost without a prefix cache.
Both depend only on the problem's own calls, so they are the same for any batch and after a resume.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from grading.boxed import has_complete_boxed
from gsi.engines.base import FINISH_EOS, Step
from gsi.roles import ROLES


def _role_counts() -> dict:
    return {r: {"generated": 0, "context": 0} for r in ROLES}

STOP_EOS = "eos"
STOP_BOXED = "boxed"
STOP_MAX_STEPS = "max_steps"
STOP_CONTEXT = "truncated"  # the next step would not fit the smallest context window
STOP_PATIENCE = "patience"  # RSD's batch-global patience (reproduction flag only)


@dataclass
class StepRecord:
    text: str
    token_ids: tuple[int, ...]
    source: str  # the role that wrote it: small | big
    accepted: bool | None  # the accept decision (None for methods without one)
    reward: float | None = None
    chosen_draft_tokens: int = 0  # tokens of the pi_S draft put to the accept test (the chosen one of n)
    drafted_tokens: int = 0  # tokens of all n pi_S drafts of this step


@dataclass
class ProblemState:
    index: int  # position in the run's problem list (results keep this order)
    id: str
    problem: str
    reference: str
    prompt_ids: list[int]
    context: list[int]  # prompt + chosen steps
    steps: list[StepRecord] = field(default_factory=list)
    done: bool = False
    stop_reason: str | None = None
    final_text: str | None = None  # set by methods that choose a whole response (response-level BoN)
    # Per role: tokens generated, and tokens read (context and teacher-forced/scored candidates); see the module
    # docstring for the two ways of counting.
    tokens: dict = field(default_factory=lambda: _role_counts())
    tokens_nocache: dict = field(default_factory=lambda: _role_counts())
    read: dict = field(default_factory=lambda: dict.fromkeys(ROLES, 0))  # per role: context read so far
    # Per role: candidates read at the current context (token ids -> the role's position after reading it).
    pending: dict = field(default_factory=lambda: {r: {} for r in ROLES})
    empty_candidates: int = 0  # candidates with no text but the delimiter (or EOS at once)
    trace: list[dict] = field(default_factory=list)
    scratch: dict = field(default_factory=dict)  # a method's private per-problem state

    @property
    def step_index(self) -> int:
        return len(self.steps)

    @property
    def response_text(self) -> str:
        return self.final_text if self.final_text is not None else "".join(s.text for s in self.steps)

    def count_nocache(self, role: str, *, generated: int = 0, context: int = 0) -> None:
        self.tokens_nocache[role]["generated"] += generated
        self.tokens_nocache[role]["context"] += context

    def charge(self, role: str, context_len: int, candidates: Sequence[tuple[Sequence[int], int]], *,
               generated: bool) -> None:
        """One request of `role` at the current context: the context is `context_len` of the role's tokens (only
        what lies beyond the role's mark is new), then each candidate's own tokens (ids, how many of the role's
        tokens they are). `generated`: the role sampled the candidates (else it read them)."""
        new = max(0, context_len - self.read[role])
        self.read[role] = max(self.read[role], context_len)
        own = sum(n for _, n in candidates)
        self.tokens[role]["generated"] += own if generated else 0
        self.tokens[role]["context"] += new + (0 if generated else own)
        for ids, n in candidates:
            self.pending[role][tuple(ids)] = context_len + n

    def extend(self, token_ids: Sequence[int]) -> None:
        """Append a chosen step to the context; a role that read it as a candidate has it cached already."""
        self.context.extend(token_ids)
        key = tuple(token_ids)
        for role in ROLES:
            end = self.pending[role].get(key)
            if end is not None:
                self.read[role] = max(self.read[role], end)
            self.pending[role].clear()


def stop_reason_after(state: ProblemState, step: Step, *, max_steps: int, room: int) -> str | None:
    """The stop rules of methods.md, checked after `step` was appended; `room` is what is left of the smallest
    context window."""
    if step.finish == FINISH_EOS:
        return STOP_EOS
    if "\\boxed" in step.text and has_complete_boxed(state.response_text[-(len(step.text) + 2000):]):
        return STOP_BOXED
    if state.step_index >= max_steps:
        return STOP_MAX_STEPS
    if room < 1:
        return STOP_CONTEXT
    return None
