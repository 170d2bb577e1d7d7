"""A problem's progress through the step loop: its context, its chosen steps and its accounting."""

from __future__ import annotations

from dataclasses import dataclass, field

from gsi.engines.base import FINISH_EOS, Step

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
    draft_tokens: int = 0  # tokens of the pi_S draft that was put to the accept test


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
    # Per role: tokens generated, and context tokens sent (prompt/teacher-forced input) to that role.
    tokens: dict = field(default_factory=lambda: {r: {"generated": 0, "context": 0} for r in ("small", "big", "reward")})
    trace: list[dict] = field(default_factory=list)
    scratch: dict = field(default_factory=dict)  # a method's private per-problem state

    @property
    def step_index(self) -> int:
        return len(self.steps)

    @property
    def response_text(self) -> str:
        return self.final_text if self.final_text is not None else "".join(s.text for s in self.steps)

    def count(self, role: str, *, generated: int = 0, context: int = 0) -> None:
        self.tokens[role]["generated"] += generated
        self.tokens[role]["context"] += context


def has_complete_boxed(text: str) -> bool:
    """True when text contains a \\boxed{...} whose braces close."""
    start = text.rfind("\\boxed{")
    while start != -1:
        depth = 0
        for ch in text[start + len("\\boxed"):]:
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    return True
        start = text.rfind("\\boxed{", 0, start)
    return False


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
