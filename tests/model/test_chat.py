import pytest

from alignflow.model import chat

CONV = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"}]


def test_smollm2_template_adds_default_system(bundled_tok):
    _, template = bundled_tok
    text = chat.prompt_text(template, CONV[:1])
    assert text == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"
    )


def test_split_for_training_prompt_plus_response_is_full(bundled_tok):
    _, template = bundled_tok
    prompt, response = chat.split_for_training(template, CONV)
    assert prompt.endswith("<|im_start|>assistant\n")
    assert response == "Hello!<|im_end|>\n"
    assert prompt + response == chat.render(template, CONV, add_generation_prompt=False)


@pytest.mark.parametrize("name", ["chatml", "gemma", "llama3"])
def test_builtin_templates_split_cleanly(name):
    template = chat.BUILTIN_TEMPLATES[name]
    conv = [{"role": "system", "content": "Be brief."}] + CONV
    prompt, response = chat.split_for_training(template, conv)
    assert response.startswith("Hello!")
    assert "Be brief." in prompt


def test_gemma_template_shape():
    text = chat.prompt_text(chat.BUILTIN_TEMPLATES["gemma"], CONV[:1])
    assert text == "<start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\n"


def test_auto_picks_model_template_then_name():
    assert chat.resolve_template("auto", "{{x}}", "any") == "{{x}}"
    assert chat.resolve_template("auto", None, "gemma2_instruct_2b_en") == chat.BUILTIN_TEMPLATES["gemma"]
    with pytest.raises(chat.ChatFormatError, match="unknown chat template"):
        chat.resolve_template("nope", None, "")


@pytest.mark.parametrize(
    "messages,match",
    [
        ([], "at least one"),
        ([{"role": "robot", "content": "x"}], "role 'robot'"),
        ([{"role": "user", "content": "  "}], "non-empty"),
        ([{"role": "user", "content": "x", "policy": "hate_speech"}], "exactly the keys"),
    ],
)
def test_bad_messages_are_named(messages, match):
    with pytest.raises(chat.ChatFormatError, match=match):
        chat.render(chat.BUILTIN_TEMPLATES["chatml"], messages, True)


def test_training_needs_assistant_last():
    with pytest.raises(chat.ChatFormatError, match="end with an assistant"):
        chat.split_for_training(chat.BUILTIN_TEMPLATES["chatml"], CONV[:1])
