import dataclasses

import pytest

from alignflow import config


def write(tmp_path, text):
    p = tmp_path / "params.yaml"
    p.write_text(text)
    return p


def test_repo_params_load_and_are_frozen(repo_root):
    cfg = config.load(repo_root / "params.yaml")
    assert cfg.model.base == "bundled:smollm2-135m-instruct"
    assert isinstance(cfg.base_model.prompts, tuple)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 1


def test_defaults_fill_missing_keys(tmp_path):
    cfg = config.load(write(tmp_path, "seed: 7\n"))
    assert cfg.seed == 7 and cfg.generate.batch_size == config.GenerateParams().batch_size


@pytest.mark.parametrize(
    "text,key",
    [
        ("sede: 1\n", "sede"),
        ("model:\n  bsae: x\n", "model.bsae"),
        ("generate:\n  batch_size: eight\n", "generate.batch_size"),
        ("generate:\n  batch_size: true\n", "generate.batch_size"),
        ("base_model:\n  prompts: hello\n", "base_model.prompts"),
        ("base_model:\n  prompts: [1]\n", "base_model.prompts[0]"),
        ("model: 3\n", "model"),
    ],
)
def test_unknown_or_mistyped_key_is_named(tmp_path, text, key):
    path = write(tmp_path, text)
    with pytest.raises(config.ConfigError) as err:
        config.load(path)
    assert f"'{key}'" in str(err.value) or f"{key}:" in str(err.value)
    assert str(path) in str(err.value)


def test_missing_and_invalid_yaml(tmp_path):
    with pytest.raises(config.ConfigError, match="no such params file"):
        config.load(tmp_path / "nope.yaml")
    with pytest.raises(config.ConfigError, match="not valid YAML"):
        config.load(write(tmp_path, "a: [\n"))


def test_help_lists_every_leaf_key():
    lines = config.help_text()
    assert any(line.startswith("generate.max_new_tokens (64): ") for line in lines)
    assert all(": " in line for line in lines)
    assert any(line.startswith("evaluate.generation.batch_size (64): ") for line in lines)  # nested sections


def test_flatten():
    assert config.flatten({"a": {"b": 1}, "c": 2}) == {"a.b": 1, "c": 2}
