"""The registered model: an MLflow pyfunc that answers chat conversations with the tuned model.

Logged as code (MLflow "models from code"): MLflow copies this file into the model and runs it at load
time, so nothing is pickled. The merged keras-hub preset travels as the artifact `merged`, alignflow's
own source as code_paths, and the evaluated generation params as model_config: what is served
generates exactly as what was measured. Input: rows with `messages` (a list of {role, content}), as a
pandas DataFrame or a list of dicts; output: one answer string per row. The type hints below are the
signature (MLflow infers and enforces it; pydantic checks every message).
"""

import dataclasses
import importlib.metadata
from pathlib import Path

import mlflow
import pydantic
from mlflow.models import set_model

import alignflow  # noqa: F401  (sets KERAS_BACKEND=jax before anything imports keras)

MERGED = "merged"  # artifact key of the merged keras-hub preset folder
MODEL_CARD = "model_card"
# Pinned from this environment; passing them stops MLflow from loading the model again in a subprocess
# only to guess its requirements.
REQUIREMENTS = ("mlflow", "keras", "keras-hub", "jax", "jaxlib", "tokenizers", "gguf", "numpy", "pandas",
                "pydantic", "pyyaml", "jinja2", "tqdm")


class Message(pydantic.BaseModel):
    role: str
    content: str


class Conversation(pydantic.BaseModel):
    messages: list[Message]


def batch_size_for(n: int, cap: int) -> int:
    """n rounded up to a power of two, at most `cap`: one message does not pay for a full batch, and
    XLA compiles at most log2(cap) + 1 shapes (padding repeats a prompt, see generate_ids)."""
    size = 1
    while size < min(n, cap):
        size *= 2
    return min(size, cap)


class ChatPyfunc(mlflow.pyfunc.PythonModel):
    """Greedy answers from the merged tuned model, loaded through alignflow's loader."""

    def load_context(self, context) -> None:
        from alignflow.config import GenerateParams, ModelParams
        from alignflow.model.base import load_model

        self.model = load_model(ModelParams(base=context.artifacts[MERGED]))
        self.generation = GenerateParams(**(context.model_config or {}).get("generation", {}))

    def predict(self, model_input: list[Conversation], params: dict | None = None) -> list[str]:
        conversations = [[m.model_dump() for m in c.messages] for c in model_input]
        if not conversations:
            return []
        gen = dataclasses.replace(self.generation, batch_size=batch_size_for(len(conversations), self.generation.batch_size))
        return self.model.chat(conversations, gen).texts


def requirements() -> list[str]:
    out = []
    for name in REQUIREMENTS:
        try:
            out.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def log_chat_model(merged: Path, model_card: Path, generation: dict, example: str, registered_model_name: str):
    """Log the pyfunc in the active run and register it as a new version; returns MLflow's ModelInfo.

    The input example is answered once while logging (MLflow checks it can be served), a smoke test."""
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=str(Path(__file__).resolve()),
        artifacts={MERGED: str(merged), MODEL_CARD: str(model_card)},
        code_paths=[str(Path(alignflow.__file__).resolve().parent)],
        model_config={"generation": generation},
        input_example=[{"messages": [{"role": "user", "content": example}]}],
        pip_requirements=requirements(),
        registered_model_name=registered_model_name,
    )


if __name__ != "alignflow.registry.pyfunc":  # run by MLflow as model code (not imported as the library)
    set_model(ChatPyfunc())
