"""The real bundled SmolLM2-135M-Instruct, loaded offline (slow: ~15 s load, ~20 s first compile)."""

import subprocess
import sys

import pytest

from alignflow.config import GenerateParams

pytestmark = pytest.mark.slow


def test_loaded_model_matches_design(smollm2):
    assert smollm2.info["parameters"] == 134_515_008
    assert smollm2.causal_lm.backbone.tie_word_embeddings
    assert len(smollm2.source_hash) == 64


def test_answers_sensibly_in_fixed_batches(smollm2):
    gen = GenerateParams(batch_size=4, max_prompt_tokens=64, max_new_tokens=24)
    out = smollm2.ask(["What is the capital of France?", "What is 2 + 2?", "Name a primary colour."], gen)
    assert "Paris" in out.texts[0]
    assert "4" in out.texts[1] or "four" in out.texts[1].lower()
    assert len(out.texts) == 3 and all(0 < n <= 24 for n in out.new_tokens)
    # greedy decoding is deterministic and independent of the batch padding
    again = smollm2.ask(["What is the capital of France?"], gen)
    assert again.texts[0] == out.texts[0]


def test_cli_chat_answers_paris(repo_root):
    proc = subprocess.run(
        [sys.executable, "-m", "alignflow.cli", "chat", "What is the capital of France?", "--max-new-tokens", "24"],
        cwd=repo_root, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Paris" in proc.stdout
