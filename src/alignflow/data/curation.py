"""The curation steps on a Hugging Face `datasets.Dataset`: normalise, scrub PII, deduplicate,
decontaminate, split. Pure: rows in, rows (and dropped rows with reasons) out."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
from datasets import Dataset

from alignflow.config import CurateParams
from alignflow.data import dedup
from alignflow.data.records import Dropped
from alignflow.data.text import PLACEHOLDERS, key, normalise, scrub_pii

PII_KINDS = tuple(PLACEHOLDERS)


def _prepare_batch(batch: dict[str, list], shingle_n: int, num_perm: int, bands: int,
                   index: dedup.ReferenceIndex, threshold: float) -> dict[str, list]:
    """Per row: normalised + scrubbed messages, prompt/response, keys, MinHash signature, contamination."""
    out: dict[str, list] = {k: [] for k in ("messages", "prompt", "response", "key", "empty", "sig",
                                            "contam_ref", "contam_method", "contam_sim", *[f"pii_{k}" for k in PII_KINDS])}
    shingles, prompt_shingles = [], []
    for messages in batch["messages"]:
        counts: Counter = Counter()
        clean = []
        for m in messages:
            text, c = scrub_pii(normalise(m["content"]))
            counts.update(c)
            clean.append({"role": m["role"], "content": text})
        prompt = next(m["content"] for m in reversed(clean) if m["role"] == "user")
        response = clean[-1]["content"]
        out["messages"].append(clean)
        out["prompt"].append(prompt)
        out["response"].append(response)
        out["key"].append(key(prompt))
        out["empty"].append(any(not m["content"] for m in clean))
        for k in PII_KINDS:
            out[f"pii_{k}"].append(counts[k])
        shingles.append(dedup.shingle_hashes(prompt + "\n" + response, shingle_n))
        prompt_shingles.append(dedup.shingle_hashes(prompt, shingle_n))
    out["sig"] = dedup.digests(shingles, num_perm).tolist()
    prompt_keys = dedup.band_keys(dedup.digests(prompt_shingles, num_perm), bands)
    for prompt, sh, keys in zip(out["prompt"], prompt_shingles, prompt_keys):
        ref, method, sim = index.match(prompt, sh, keys, threshold)
        out["contam_ref"].append(ref)
        out["contam_method"].append(method)
        out["contam_sim"].append(sim)
    return out


@dataclass
class Curated:
    kept: Dataset  # with a `split` column
    dropped: list[Dropped]
    pii: dict[str, int]


def curate(rows: Dataset, eval_ids: list[str], eval_texts: list[str], p: CurateParams, seed: int) -> Curated:
    """Normalise, scrub PII, drop exact and near duplicates and contaminated rows, split train/val."""
    eval_texts = [normalise(t) for t in eval_texts]
    index = dedup.ReferenceIndex(eval_texts, p.shingle_words, p.contamination_ngram, p.num_perm, p.lsh_bands)
    num_proc = p.num_proc if p.num_proc > 1 and len(rows) >= 2000 else None  # processes cost ~1 s to start
    ds = rows.map(
        _prepare_batch, batched=True, batch_size=1000, num_proc=num_proc, load_from_cache_file=False,
        fn_kwargs=dict(shingle_n=p.shingle_words, num_perm=p.num_perm, bands=p.lsh_bands,
                       index=index, threshold=p.contamination_threshold),
        desc="normalise, scrub, sign",
    )
    dropped: list[Dropped] = []
    alive = np.ones(len(ds), dtype=bool)
    ids, files, lines, raws = ds["id"], ds["_file"], ds["_line"], ds["_raw"]

    def drop(i: int, reason: str, flt: str, detail: str, field: str | None = None) -> None:
        alive[i] = False
        dropped.append(Dropped(files[i], lines[i], reason, flt, detail, raws[i], ids[i], field))

    for i, empty in enumerate(ds["empty"]):
        if empty:
            drop(i, "empty_content", "normalise", "content is empty after normalisation", "messages")
    first: dict[str, int] = {}
    for i, k in enumerate(ds["key"]):
        if not alive[i]:
            continue
        if k in first:
            drop(i, "exact_duplicate", "exact_dedup", f"same prompt as '{ids[first[k]]}'", "messages")
        else:
            first[k] = i
    for i, (ref, method, sim) in enumerate(zip(ds["contam_ref"], ds["contam_method"], ds["contam_sim"])):
        if alive[i] and ref >= 0:
            drop(i, "contaminated", "decontaminate", f"matches held-out '{eval_ids[ref]}' ({method}, jaccard {sim})", "messages")
    live = np.flatnonzero(alive)
    prompts, responses = ds["prompt"], ds["response"]
    texts = [prompts[i] + "\n" + responses[i] for i in live]
    sig = np.asarray(ds.select(live)["sig"], dtype=np.uint32).reshape(len(live), p.num_perm)
    for m in dedup.near_duplicates(texts, sig, p.shingle_words, p.lsh_bands, p.near_dup_threshold):
        drop(int(live[m.index]), "near_duplicate", "near_dedup",
             f"near duplicate of '{ids[int(live[m.other])]}' (jaccard {m.similarity})", "messages")
    kept = ds.select(np.flatnonzero(alive))
    splits = stratified_split(kept["policy"], kept["use_case"], p.val_fraction, seed)
    kept = kept.add_column("split", splits)
    pii = {k: int(sum(kept[f"pii_{k}"])) for k in PII_KINDS}
    kept = kept.map(lambda b: {"pii_replaced": [sum(x) for x in zip(*[b[f"pii_{k}"] for k in PII_KINDS])]},
                    batched=True, desc="count pii")
    return Curated(kept, dropped, pii)


def stratified_split(policies: list[str], use_cases: list[str], val_fraction: float, seed: int) -> list[str]:
    """'train'/'val' per row: within each policy x use case cell, a seeded shuffle sends
    round(n * val_fraction) rows to val (at least one when the cell has 3 or more rows)."""
    cells: dict[tuple[str, str], list[int]] = {}
    for i, cell in enumerate(zip(policies, use_cases)):
        cells.setdefault(cell, []).append(i)
    out = ["train"] * len(policies)
    rng = np.random.default_rng(seed)
    for cell in sorted(cells):
        members = np.array(cells[cell])
        rng.shuffle(members)
        n_val = int(round(len(members) * val_fraction))
        if val_fraction > 0 and n_val == 0 and len(members) >= 3:
            n_val = 1
        for i in members[:n_val]:
            out[int(i)] = "val"
    return out
