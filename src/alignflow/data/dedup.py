"""Near-duplicate detection: MinHash (rensa) + LSH banding + an exact Jaccard check on every candidate.

The banding (16 bands x 8 rows for 128 permutations by default) is wider than datasketch's default for
threshold 0.8, which misses many pairs near the threshold; the explicit Jaccard check on candidate pairs
keeps precision at 1.0 with respect to the shingle sets.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import rensa
import xxhash

from alignflow.data.text import ngrams, words

MINHASH_SEED = 1234  # fixed: digests must not depend on the process or run


def shingle_hashes(text: str, n: int) -> np.ndarray:
    """Sorted unique 64-bit hashes of the word n-grams of `text` (stable across processes)."""
    grams = ngrams(words(text), n)
    return np.unique(np.fromiter((xxhash.xxh3_64_intdigest(g.encode()) for g in grams), dtype=np.uint64, count=len(grams)))


def digests(shingles: Sequence[np.ndarray], num_perm: int) -> np.ndarray:
    """MinHash signatures [len(shingles), num_perm] (uint32) from pre-hashed shingles."""
    if not shingles:
        return np.zeros((0, num_perm), dtype=np.uint32)
    lengths = np.fromiter((len(s) for s in shingles), dtype=np.int64, count=len(shingles))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.uint64)
    flat = np.concatenate(shingles).astype(np.uint64) if lengths.sum() else np.zeros(0, np.uint64)
    matrix = rensa.RMinHash.digest_matrix_from_flat_token_hashes(flat, offsets, num_perm, MINHASH_SEED)
    return np.asarray(matrix.to_rows(), dtype=np.uint32).reshape(len(shingles), num_perm)


def band_keys(sig: np.ndarray, bands: int) -> np.ndarray:
    """[n, bands] uint64 keys: each band's rows hashed together (equal keys = LSH candidates)."""
    n, perm = sig.shape
    if perm % bands:
        raise ValueError(f"num_perm {perm} is not divisible by lsh_bands {bands}")
    rows = perm // bands
    b = sig.reshape(n, bands, rows).astype(np.uint64)
    keys = np.zeros((n, bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for r in range(rows):  # polynomial rolling hash with wrap-around
            keys = keys * np.uint64(0x100000001B3) + b[:, :, r] + np.uint64(r + 1)
    return keys


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) == 0 and len(b) == 0:
        return 1.0
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / (len(a) + len(b) - inter)


def candidate_pairs(keys: np.ndarray) -> set[tuple[int, int]]:
    """Pairs (i < j) that share at least one band key."""
    pairs: set[tuple[int, int]] = set()
    for band in range(keys.shape[1]):
        col = keys[:, band]
        order = np.argsort(col, kind="stable")
        sorted_col = col[order]
        starts = np.flatnonzero(np.r_[True, sorted_col[1:] != sorted_col[:-1]])
        ends = np.r_[starts[1:], len(col)]
        for s, e in zip(starts, ends):
            if e - s > 1:
                members = np.sort(order[s:e])
                for x in range(len(members)):
                    for y in range(x + 1, len(members)):
                        pairs.add((int(members[x]), int(members[y])))
    return pairs


@dataclass(frozen=True)
class Match:
    """Row `index` duplicates (or is contaminated by) `other` with Jaccard `similarity`."""

    index: int
    other: int
    similarity: float


def near_duplicates(texts: Sequence[str], sig: np.ndarray, shingle_n: int, bands: int, threshold: float) -> list[Match]:
    """Rows to drop, in order: a row goes if it is similar (>= threshold) to an earlier *kept* row.

    Shingle sets are rebuilt only for rows in candidate pairs, so memory stays linear in the rows
    (the signatures) rather than in their shingles.
    """
    pairs = candidate_pairs(band_keys(sig, bands))
    cache: dict[int, np.ndarray] = {}

    def sh(i: int) -> np.ndarray:
        if i not in cache:
            cache[i] = shingle_hashes(texts[i], shingle_n)
        return cache[i]

    neighbours: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for i, j in sorted(pairs):
        sim = jaccard(sh(i), sh(j))
        if sim >= threshold:
            neighbours[j].append((i, sim))
    kept = np.ones(len(texts), dtype=bool)
    drops = []
    for j in sorted(neighbours):
        for i, sim in neighbours[j]:
            if kept[i]:
                kept[j] = False
                drops.append(Match(j, i, round(sim, 4)))
                break
    return drops


class ReferenceIndex:
    """Held-out texts to check tuning rows against: word n-gram overlap and MinHash-LSH similarity."""

    def __init__(self, texts: Sequence[str], shingle_n: int, overlap_n: int, num_perm: int, bands: int):
        self.shingle_n, self.overlap_n, self.num_perm, self.bands = shingle_n, overlap_n, num_perm, bands
        self.shingles = [shingle_hashes(t, shingle_n) for t in texts]
        self.band_index: dict[tuple[int, int], list[int]] = defaultdict(list)
        for idx, row in enumerate(band_keys(digests(self.shingles, num_perm), bands)):
            for b, k in enumerate(row):
                self.band_index[(b, int(k))].append(idx)
        self.long_grams: dict[int, int] = {}
        for idx, t in enumerate(texts):
            toks = words(t)
            if len(toks) >= overlap_n:
                for g in ngrams(toks, overlap_n):
                    self.long_grams.setdefault(xxhash.xxh3_64_intdigest(g.encode()), idx)

    def match(self, text: str, shingles: np.ndarray, keys: np.ndarray, threshold: float) -> tuple[int, str, float]:
        """(reference index, method, similarity) of the closest held-out text, or (-1, "", 0.0)."""
        best: tuple[int, float] | None = None
        for b, k in enumerate(keys):
            for ref in self.band_index.get((b, int(k)), ()):
                sim = jaccard(shingles, self.shingles[ref])
                if sim >= threshold and (best is None or sim > best[1]):
                    best = (ref, sim)
        if best:
            return best[0], "similarity", round(best[1], 4)
        toks = words(text)
        if len(toks) >= self.overlap_n:
            for g in ngrams(toks, self.overlap_n):
                ref = self.long_grams.get(xxhash.xxh3_64_intdigest(g.encode()))
                if ref is not None:
                    return ref, f"{self.overlap_n}-gram overlap", 1.0
        return -1, "", 0.0
