"""The one place a conversation becomes model text: chat templates (Jinja, as Hugging Face uses them).

A GGUF file carries its own template (SmolLM2: ChatML with a default system prompt); keras-hub presets
get a built-in template chosen by name. Training splits a rendered conversation into prompt and
response text here too, so the response-only loss mask and generation see identical formatting.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Mapping, Sequence

from jinja2.sandbox import ImmutableSandboxedEnvironment

Message = Mapping[str, str]

BUILTIN_TEMPLATES = {
    "chatml": (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    ),
    # Gemma has no system role: a system message is prefixed to the first user turn.
    "gemma": (
        "{% set sys = messages[0]['content'] + '\n\n' if messages[0]['role'] == 'system' else '' %}"
        "{% for m in messages if m['role'] != 'system' %}"
        "{{ '<start_of_turn>' + ('model' if m['role'] == 'assistant' else 'user') + '\n' }}"
        "{{ (sys if loop.first else '') + m['content'] + '<end_of_turn>\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
    ),
    "llama3": (
        "{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' }}"
        "{{ m['content'] + '<|eot_id|>' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
    ),
}

ROLES = ("system", "user", "assistant")


class ChatFormatError(ValueError):
    """A conversation that cannot be rendered (bad role, empty content, wrong order)."""


@lru_cache(maxsize=16)
def _compile(source: str):
    env = ImmutableSandboxedEnvironment(trim_blocks=False, lstrip_blocks=False)
    return env.from_string(source)


def resolve_template(name: str, model_template: str | None, model_name: str = "") -> str:
    """Template source for a params name: 'auto' takes the model's own, else a built-in by name."""
    if name == "auto":
        if model_template:
            return model_template
        lowered = model_name.lower()
        name = "gemma" if "gemma" in lowered else "llama3" if "llama3" in lowered else "chatml"
    if name not in BUILTIN_TEMPLATES:
        raise ChatFormatError(f"unknown chat template '{name}' (known: auto, {', '.join(BUILTIN_TEMPLATES)})")
    return BUILTIN_TEMPLATES[name]


def check_messages(messages: Sequence[Message]) -> None:
    """Raise ChatFormatError unless messages are role/content dicts with known roles and text."""
    if not messages:
        raise ChatFormatError("a conversation needs at least one message")
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or set(m) - {"role", "content"} or "role" not in m or "content" not in m:
            raise ChatFormatError(f"message {i}: expected exactly the keys 'role' and 'content'")
        if m["role"] not in ROLES:
            raise ChatFormatError(f"message {i}: role '{m['role']}' is not one of {', '.join(ROLES)}")
        if not isinstance(m["content"], str) or not m["content"].strip():
            raise ChatFormatError(f"message {i}: content must be non-empty text")


def render(template: str, messages: Sequence[Message], add_generation_prompt: bool) -> str:
    """Render messages with a Jinja chat template."""
    check_messages(messages)
    plain = [{"role": m["role"], "content": m["content"]} for m in messages]
    return _compile(template).render(messages=plain, add_generation_prompt=add_generation_prompt)


def prompt_text(template: str, messages: Sequence[Message]) -> str:
    """Text the model continues to answer the last user message."""
    return render(template, messages, add_generation_prompt=True)


def split_for_training(template: str, messages: Sequence[Message]) -> tuple[str, str]:
    """(prompt, response) texts of a conversation ending in an assistant turn.

    prompt + response == the full rendered conversation; the response includes the end-of-turn
    marker, so the model learns to stop.
    """
    check_messages(messages)
    if messages[-1]["role"] != "assistant":
        raise ChatFormatError("a training conversation must end with an assistant message")
    prompt = render(template, messages[:-1], add_generation_prompt=True)
    full = render(template, messages, add_generation_prompt=False)
    if not full.startswith(prompt):
        raise ChatFormatError("chat template renders the prompt differently inside the full conversation")
    return prompt, full[len(prompt):]
