"""The tuned model on disk, and loading it back in a fresh process (Keras safe mode, no code).

    <tuned>/adapter/adapter.lora.h5   LoRA weights (keras-hub `save_lora_weights`)
    <tuned>/adapter/adapter.json      base model spec and sha256, LoRA rank and layers, params
    <tuned>/merged/                   keras-hub preset with the adapter merged into the kernels,
                                      plus alignflow's tokenizer, chat template and alignflow.json
"""

from __future__ import annotations

import json
from pathlib import Path

from alignflow.model.base import ChatModel, _greedy_lm, load_model
from alignflow.model.gguf_loader import ModelLoadError
from alignflow.model.sft import DEFAULT_LORA_TARGETS, enable_lora
from alignflow.model.tokenizer import BPETokenizer

ADAPTER_WEIGHTS = "adapter.lora.h5"
ADAPTER_META = "adapter.json"
MERGED_META = "alignflow.json"
TOKENIZER_FILE = "tokenizer.alignflow.json"
TEMPLATE_FILE = "chat_template.jinja"


def save_tuned(model: ChatModel, out: Path, meta: dict) -> None:
    """Write adapter/ and merged/ under `out` (which the caller makes atomic)."""
    adapter = out / "adapter"
    adapter.mkdir(parents=True)
    model.causal_lm.backbone.save_lora_weights(str(adapter / ADAPTER_WEIGHTS))
    (adapter / ADAPTER_META).write_text(json.dumps(meta, indent=2, sort_keys=True))

    merged = out / "merged"
    # Keras merges LoRA into each kernel when it saves a layer's variables, so the preset is a plain model.
    model.causal_lm.save_to_preset(str(merged))
    # keras-hub's LlamaBackbone.get_config() drops tie_word_embeddings; without it the preset reloads
    # with an untied output layer and the weights no longer fit. Both config files carry the backbone.
    _patch_backbone_config(merged, bool(model.causal_lm.backbone.tie_word_embeddings))
    if not isinstance(model.tokenizer, BPETokenizer):
        raise ModelLoadError("saving a tuned keras-hub preset model needs its tokenizer saved too (not supported yet)")
    model.tokenizer.save(merged / TOKENIZER_FILE)
    (merged / TEMPLATE_FILE).write_text(model.template, encoding="utf-8")
    (merged / MERGED_META).write_text(json.dumps(meta, indent=2, sort_keys=True))


def _patch_backbone_config(preset: Path, tied: bool) -> None:
    def patch(node):
        if isinstance(node, dict):
            if str(node.get("class_name", "")).endswith("Backbone") and isinstance(node.get("config"), dict):
                node["config"]["tie_word_embeddings"] = tied
            for value in node.values():
                patch(value)
        elif isinstance(node, list):
            for value in node:
                patch(value)

    for name in ("config.json", "task.json"):
        file = preset / name
        if file.exists():
            data = json.loads(file.read_text())
            patch(data)
            file.write_text(json.dumps(data, indent=4))


def is_tuned_preset(path: Path) -> bool:
    return (path / MERGED_META).exists()


def load_merged(path: Path) -> ChatModel:
    """The merged preset: keras-hub `from_preset` (safe mode) plus alignflow's tokenizer and template."""
    import keras_hub

    lm = keras_hub.models.CausalLM.from_preset(str(path), preprocessor=None)
    lm.compile(sampler="greedy")
    meta = json.loads((path / MERGED_META).read_text())
    return ChatModel(
        name=f"tuned:{meta.get('base', '?')}",
        causal_lm=lm,
        tokenizer=BPETokenizer.load(path / TOKENIZER_FILE),
        template=(path / TEMPLATE_FILE).read_text(encoding="utf-8"),
        source_hash=meta.get("base_sha256", ""),
        info={"format": "alignflow-merged", "parameters": int(lm.backbone.count_params()), "meta": meta},
    )


def load_adapter(path: Path, base_params) -> ChatModel:
    """The base model named in adapter.json with the LoRA weights applied (base hash must match)."""
    import dataclasses

    meta = json.loads((path / ADAPTER_META).read_text())
    base = load_model(dataclasses.replace(base_params, base=meta["base"]))
    if meta.get("base_sha256") and base.source_hash != meta["base_sha256"]:
        raise ModelLoadError(
            f"{path}: adapter was trained on base sha256 {meta['base_sha256'][:12]}..., "
            f"but '{meta['base']}' now has {base.source_hash[:12]}..."
        )
    enable_lora(base.causal_lm.backbone, meta["lora_rank"], meta.get("lora_top_layers", 0),
                tuple(meta.get("lora_targets", DEFAULT_LORA_TARGETS)))
    base.causal_lm.backbone.load_lora_weights(str(path / ADAPTER_WEIGHTS))
    base.causal_lm = _greedy_lm(base.causal_lm.backbone)
    base.name = f"{base.name}+lora"
    base.info = {**base.info, "format": "alignflow-adapter", "meta": meta}
    return base
