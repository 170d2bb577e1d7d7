"""The problem prompt x: one rendered context, identical for pi_S, pi_B and (as text) the PRM."""

from __future__ import annotations


def system_prompt(model_system_prompt: str, dataset_instruction: str | None) -> str:
    # The dataset's answer-format instruction (Minerva) joins the system prompt, for every role alike.
    return " ".join(part for part in (model_system_prompt, dataset_instruction) if part)


def render_prompt(tokenizer, system: str, problem: str) -> list[int]:
    """Chat-template the problem and return token ids; generation continues an open assistant turn.

    An empty system prompt means no system turn (as the PRM adapters render it), not an empty one."""
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": problem})
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]
