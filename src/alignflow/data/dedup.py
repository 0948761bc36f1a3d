"""Near-duplicate detection: MinHash (rensa) + LSH banding + an exact Jaccard check on every candidate.

The banding (16 bands x 8 rows for 128 permutations by default) is wider than datasketch's default for
threshold 0.8, which misses many pairs near the threshold; the explicit Jaccard check on candidate pairs
keeps precision at 1.0 with respect to the shingle sets.

rensa computes digests on a Rust thread pool (rayon). A process forked after that pool started hangs on
its first parallel rensa call, so rensa runs only in the parent process: worker processes (datasets.map
with num_proc) produce shingle hashes, never digests.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pyarrow as pa
import rensa
import xxhash

from alignflow.data.text import ngrams, word_stream, words

MINHASH_SEED = 1234  # fixed: digests must not depend on the process or run
_LOW_MASK = (1 << 20) - 1  # ReferenceIndex's prefilter table: 2**20 entries (1 MB)


_U64 = np.uint64
_BYTE_MULT = _U64(0x100000001B3)  # odd: the polynomial over a word's bytes
GRAM_MULT = _U64(0x9E3779B97F4A7C15)  # odd: the polynomial over an n-gram's word hashes
_MASK64 = (1 << 64) - 1


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, element-wise on uint64 (wrap-around multiplication)."""
    x = x ^ (x >> _U64(30))
    x = x * _U64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> _U64(27))
    x = x * _U64(0x94D049BB133111EB)
    return x ^ (x >> _U64(31))


@dataclass(frozen=True)
class Words:
    """The words of many texts: a 64-bit hash per word (all texts, in order), words per text, and each
    text's comparison key (its words joined by single spaces, as `text.key`)."""

    hashes: np.ndarray
    counts: np.ndarray
    keys: pa.Array


def split_words(streams: Sequence[bytes]) -> Words:
    """Words of `text.word_stream` outputs, in numpy over one buffer: no Python object per word.

    A word's hash is the polynomial sum((byte + 1) * M**k, k = position in the word) mod 2**64,
    finalised by splitmix64, so the same word gets the same hash in every text, process and run. It
    comes from prefix sums over the whole buffer (each byte weighted by M**position in the buffer),
    then each word's difference is shifted back by M**-start (M is odd, so invertible mod 2**64).
    """
    n = len(streams)
    lengths = np.fromiter(map(len, streams), dtype=np.int64, count=n)
    buf = np.frombuffer(b" ".join(streams) + b" ", dtype=np.uint8)  # a space after each text
    is_word = buf != 32
    edge = np.diff(is_word.view(np.int8), prepend=np.int8(0))
    starts, ends = np.flatnonzero(edge == 1), np.flatnonzero(edge == -1)  # the buffer ends with a space
    text_starts = np.concatenate([[0], np.cumsum(lengths + 1)[:-1]]).astype(np.int64)
    counts = np.add.reduceat(edge == 1, text_starts, dtype=np.int64) if n else np.zeros(0, np.int64)
    text_of = np.repeat(np.arange(n), counts)
    size = ends - starts
    powers, inverse = _powers(len(buf))
    prefix = np.cumsum((buf.astype(np.uint64) + _U64(1)) * powers)  # inclusive; wraps mod 2**64
    before = np.where(starts > 0, prefix[starts - 1], _U64(0))
    hashes = _mix(((prefix[ends - 1] - before) * inverse[starts]) ^ size.astype(np.uint64)) if len(size) else prefix[:0]
    keep = is_word.copy()
    keep[ends[:-1][text_of[1:] == text_of[:-1]]] = True  # one space between words of the same text
    key_len = np.bincount(text_of, weights=size, minlength=n).astype(np.int64) + np.maximum(counts - 1, 0)
    key_offsets = np.concatenate([[0], np.cumsum(key_len)]).astype(np.int32)
    keys = pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(key_offsets), pa.py_buffer(buf[keep].tobytes())])
    return Words(hashes, counts, keys)


_POWERS: list[np.ndarray] = []


def _powers(size: int) -> tuple[np.ndarray, np.ndarray]:
    """M**k and M**-k mod 2**64 for k < size (cached, grown by doubling)."""
    if not _POWERS or len(_POWERS[0]) < size:
        cap = max(size, 2 * len(_POWERS[0]) if _POWERS else 1 << 16)
        inv = pow(int(_BYTE_MULT), -1, 1 << 64)
        with np.errstate(over="ignore"):
            up = np.cumprod(np.r_[_U64(1), np.full(cap - 1, _BYTE_MULT, dtype=np.uint64)])
            down = np.cumprod(np.r_[_U64(1), np.full(cap - 1, inv, dtype=np.uint64)])
        _POWERS[:] = [up, down]
    return _POWERS[0][:size], _POWERS[1][:size]


def gram_hashes_flat(hashes: np.ndarray, counts: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Word n-gram hashes of consecutive groups of words (group i: counts[i] words of `hashes`) as a
    flat layout (values, offsets), in order, repeats kept; a group of 1 to n-1 words gives one hash
    of all its words (as `text.ngrams`), an empty group none."""
    counts = np.asarray(counts, dtype=np.int64)
    ends = np.cumsum(counts)
    grams = np.maximum(counts - n + 1, 0)
    short = np.flatnonzero((counts > 0) & (counts < n))
    per_group = grams + ((counts > 0) & (counts < n))
    offsets = np.concatenate([[0], np.cumsum(per_group)]).astype(np.int64)
    out = np.zeros(int(offsets[-1]), dtype=np.uint64)
    first = np.flatnonzero(np.arange(len(hashes)) + n <= np.repeat(ends, counts))  # full n-grams
    acc = np.zeros(len(first), dtype=np.uint64)
    for k in range(n):
        acc = acc * GRAM_MULT + hashes[first + k]
    group = np.repeat(np.arange(len(counts)), grams)
    out[offsets[:-1][group] + first - (ends - counts)[group]] = _mix(acc)
    if len(short):  # rare: texts of fewer than n words
        values = []
        for g in short.tolist():
            a = 0
            for h in hashes[ends[g] - counts[g]:ends[g]].tolist():
                a = (a * int(GRAM_MULT) + h) & _MASK64
            values.append(a)
        out[offsets[:-1][short]] = _mix(np.array(values, dtype=np.uint64) ^ _U64(n))
    return out, offsets


def shingle_rows(texts: Sequence[str], n: int) -> list[np.ndarray]:
    """Sorted unique word n-gram hashes of each text (the shingle sets of the curate stage)."""
    w = split_words([word_stream(t) for t in texts])
    flat, offsets = gram_hashes_flat(w.hashes, w.counts, n)
    return [np.unique(flat[a:b]) for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]


def shingle_hashes(text: str, n: int) -> np.ndarray:
    """Sorted unique 64-bit hashes of the word n-grams of `text` (stable across processes)."""
    return shingle_rows([text], n)[0]


def digests(shingles: Sequence[np.ndarray], num_perm: int) -> np.ndarray:
    """MinHash signatures [len(shingles), num_perm] (uint32) from pre-hashed shingles."""
    if not shingles:
        return np.zeros((0, num_perm), dtype=np.uint32)
    lengths = np.fromiter((len(s) for s in shingles), dtype=np.int64, count=len(shingles))
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    flat = np.concatenate(shingles).astype(np.uint64) if lengths.sum() else np.zeros(0, np.uint64)
    return _signatures(_digest_matrix(flat, offsets, num_perm), len(shingles), num_perm)


def _digest_matrix(flat: np.ndarray, offsets: np.ndarray, num_perm: int):
    """rensa digests of the rows flat[offsets[i]:offsets[i+1]] (repeated hashes do not change a minimum)."""
    return rensa.RMinHash.digest_matrix_from_flat_token_hashes(
        np.ascontiguousarray(flat, dtype=np.uint64), np.ascontiguousarray(offsets, dtype=np.uint64), num_perm, MINHASH_SEED)


def _signatures(matrix, n: int, num_perm: int) -> np.ndarray:
    # to_rows() builds a Python int per value (~10 us a row at 128 permutations): call it on few rows.
    values = itertools.chain.from_iterable(matrix.to_rows())
    return np.fromiter(values, dtype=np.uint32, count=n * num_perm).reshape(n, num_perm)


def gather(flat: np.ndarray, offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The flat layout (values, offsets) of a subset of rows of another flat layout, in `rows` order."""
    lengths = offsets[1:] - offsets[:-1]
    if len(rows) > 1 and (np.diff(rows) > 0).all():  # ascending: a boolean mask, ~3x faster than indices
        keep = np.zeros(len(lengths), dtype=bool)
        keep[rows] = True
        return flat[np.repeat(keep, lengths)], np.concatenate([[0], np.cumsum(lengths[rows])]).astype(np.int64)
    return take_slices(flat, offsets[:-1][rows], lengths[rows])


def flat_lists(column: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(values, offsets) of a list<uint64> column as numpy arrays (row i: values[offsets[i]:offsets[i+1]])."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    offsets = np.asarray(arr.offsets, dtype=np.int64)
    return np.asarray(arr.values, dtype=np.uint64)[offsets[0]:offsets[-1]], offsets - offsets[0]


def take_slices(flat: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows flat[starts[i]:starts[i] + lengths[i]] as a new flat layout (values, offsets)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    shift = np.repeat(np.asarray(starts, dtype=np.int64) - offsets[:-1], lengths)
    return flat[shift + np.arange(offsets[-1])], offsets


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
    return {(int(i), int(j)) for i, j in pair_array(keys)}


def pair_array(keys: np.ndarray) -> np.ndarray:
    """[m, 2] int64 pairs (i < j) sharing at least one band key, sorted, without repeats (vectorised)."""
    n = len(keys)
    codes = []
    for band in range(keys.shape[1]):
        order = np.argsort(keys[:, band], kind="stable")
        col = keys[order, band]
        starts = np.flatnonzero(np.r_[True, col[1:] != col[:-1]])
        sizes = np.diff(np.r_[starts, n])
        if not (sizes > 1).any():
            continue
        # Sorted position p, r-th of a group of k, pairs with the k - r - 1 positions after it.
        group = np.repeat(np.arange(len(starts)), sizes)
        after = sizes[group] - (np.arange(n) - starts[group]) - 1
        first = np.repeat(np.arange(n), after)
        second = first + 1 + np.arange(len(first)) - np.repeat(np.cumsum(after) - after, after)
        a, b = order[first], order[second]
        codes.append(np.minimum(a, b).astype(np.int64) * n + np.maximum(a, b))
    if not codes:
        return np.zeros((0, 2), dtype=np.int64)
    codes = np.unique(np.concatenate(codes))
    return np.stack([codes // n, codes % n], axis=1)


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
    pairs = pair_array(band_keys(sig, bands))
    rows = np.unique(pairs).tolist()
    sh = dict(zip(rows, shingle_rows([texts[i] for i in rows], shingle_n)))
    sims = np.array([jaccard(sh[i], sh[j]) for i, j in pairs.tolist()], dtype=np.float64)
    return resolve_pairs(pairs, sims, len(texts), threshold)


def near_duplicates_flat(flat: np.ndarray, offsets: np.ndarray, num_perm: int, bands: int,
                         threshold: float) -> list[Match]:
    """`near_duplicates` for rows given as shingle hashes in a flat layout (row i is
    flat[offsets[i]:offsets[i+1]], repeats allowed), without a Python object per row."""
    pairs, sims = candidate_pairs_flat(flat, offsets, num_perm, bands)
    return resolve_pairs(pairs, sims, len(offsets) - 1, threshold)


def candidate_pairs_flat(flat: np.ndarray, offsets: np.ndarray, num_perm: int, bands: int) -> tuple[np.ndarray, np.ndarray]:
    """The LSH candidate pairs (i < j, sorted) of rows in a flat layout and their exact Jaccard.

    rensa digests every row and flags the rows that share a band with another row (its bands are the
    same contiguous num_perm/bands slices as `band_keys`, tests/data check it); only flagged rows,
    the sources and copies of duplicates, are converted to numpy signatures and paired, and the
    pairs' exact Jaccard is computed for all of them at once (`pair_jaccard`). Whether two rows are a
    candidate pair does not depend on the other rows.
    """
    n = len(offsets) - 1
    if num_perm % bands:
        raise ValueError(f"num_perm {num_perm} is not divisible by lsh_bands {bands}")
    none = np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.float64)
    if n < 2:
        return none
    matrix = _digest_matrix(flat, offsets, num_perm)
    flags = rensa.RMinHashLSH(0.5, num_perm, bands).query_duplicate_flags_matrix_one_shot(matrix)  # threshold unused
    flagged = np.flatnonzero(np.fromiter(flags, dtype=bool, count=n))
    if len(flagged) < 2:
        return none
    sub_flat, sub_offsets = gather(flat, offsets, flagged)
    sig = _signatures(_digest_matrix(sub_flat, sub_offsets, num_perm), len(flagged), num_perm)
    local = pair_array(band_keys(sig, bands))  # rows of the flagged subset; order is kept (flagged ascends)
    return flagged[local], pair_jaccard(sub_flat, sub_offsets, local)


def pair_jaccard(flat: np.ndarray, offsets: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Exact Jaccard of the hash sets of rows i and j (a flat layout, repeats allowed) for each pair.

    Vectorised with one sort per chunk of pairs: every (pair, value, side) becomes one uint64 key, pair
    in the top bits, the value's top 48 bits, the side in bit 0; equal keys are repeats within a set, and
    a value that follows itself from the other side is in both sets. Sorting plain uint64 is ~6x faster
    here than np.unique's argsort, which the exact renumbering of `_pair_jaccard_renumbered` needs. The
    48-bit truncation is exact whenever no two distinct hashes of these rows share their top 48 bits,
    which is checked; if some do (about 1 run in 400 at 200k rows), the renumbered path answers.
    """
    if not len(pairs):
        return np.zeros(0, dtype=np.float64)
    rows = np.unique(pairs)
    values, bounds = gather(flat, offsets, rows)
    if _top_48_bits_collide(values):
        return _pair_jaccard_renumbered(values, bounds, rows, pairs)
    short = (values >> _U64(16)) << _U64(1)
    starts, length = bounds[:-1], np.diff(bounds)
    size = np.zeros((len(pairs), 2), dtype=np.int64)
    inter = np.zeros(len(pairs), dtype=np.int64)
    for lo in range(0, len(pairs), _PAIR_CHUNK):
        part = pairs[lo : lo + _PAIR_CHUNK]
        keys = []
        for side in (0, 1):
            r = np.searchsorted(rows, part[:, side])
            vals, _ = take_slices(short, starts[r], length[r])
            owner = np.repeat(np.arange(len(part), dtype=np.uint64), length[r]) << _U64(_PAIR_SHIFT)
            keys.append(owner | vals | _U64(side))
        k = np.sort(np.concatenate(keys))
        k = k[np.r_[True, k[1:] != k[:-1]]]  # sets: repeats within one side go
        pair = (k >> _U64(_PAIR_SHIFT)).astype(np.int64)
        side = (k & _U64(1)).astype(np.int64)
        size[lo : lo + len(part)] = np.bincount(pair * 2 + side, minlength=2 * len(part)).reshape(-1, 2)
        both = pair[1:][(k[1:] >> _U64(1)) == (k[:-1] >> _U64(1))]
        inter[lo : lo + len(part)] = np.bincount(both, minlength=len(part))
    union = size[:, 0] + size[:, 1] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


_PAIR_SHIFT = 49  # key bits: pair index 63..49, value 48..1, side 0
_PAIR_CHUNK = 1 << (64 - _PAIR_SHIFT - 1)  # 16,384 pairs a sort


def _top_48_bits_collide(values: np.ndarray) -> bool:
    """Whether two distinct values agree in their top 48 bits: neighbours in sorted order (one sort)."""
    s = np.sort(values)
    differ = s[1:] != s[:-1]
    return bool(np.any(differ & ((s[1:] >> _U64(16)) == (s[:-1] >> _U64(16)))))


def _pair_jaccard_renumbered(values: np.ndarray, bounds: np.ndarray, rows: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """`pair_jaccard` with the rows' hashes renumbered (np.unique) so that (pair, number, side) fits an int64."""
    _, ids = np.unique(values, return_inverse=True)
    vocab = np.int64(ids.max() + 1) if len(ids) else np.int64(1)
    length = np.diff(bounds)
    keys = []
    for side, r in enumerate((np.searchsorted(rows, pairs[:, 0]), np.searchsorted(rows, pairs[:, 1]))):
        at, _ = take_slices(np.arange(len(ids)), bounds[:-1][r], length[r])
        keys.append((np.repeat(np.arange(len(pairs), dtype=np.int64), length[r]) * vocab + ids[at]) * 2 + side)
    keys = np.sort(np.concatenate(keys))
    keys = keys[np.r_[True, keys[1:] != keys[:-1]]]  # sets: repeats within one side go
    pair = keys // (2 * vocab)
    size = np.bincount(pair * 2 + keys % 2, minlength=2 * len(pairs)).reshape(-1, 2)
    inter = np.bincount(pair[1:][(keys[1:] >> 1) == (keys[:-1] >> 1)], minlength=len(pairs))
    union = size[:, 0] + size[:, 1] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def resolve_pairs(pairs: np.ndarray, sims: np.ndarray, n: int, threshold: float,
                  absent: np.ndarray | None = None) -> list[Match]:
    """Keep-first resolution of sorted candidate pairs (i < j) with their Jaccard: j goes if it is
    similar (>= threshold) to an i that is kept, the lowest such i naming the match. Rows where
    `absent` is True take no part (as if they were not there)."""
    similar = sims >= threshold
    pairs, sims = pairs[similar], sims[similar]
    order = np.lexsort((pairs[:, 0], pairs[:, 1])) if len(pairs) else np.zeros(0, dtype=np.int64)
    kept = np.ones(n, dtype=bool) if absent is None else ~absent
    drops = []
    for (i, j), sim in zip(pairs[order].tolist(), sims[order].tolist()):
        if kept[j] and kept[i]:
            kept[j] = False
            drops.append(Match(j, i, round(sim, 4)))
    return drops


class ReferenceIndex:
    """Held-out texts to check tuning rows against: word n-gram overlap and MinHash-LSH similarity."""

    def __init__(self, texts: Sequence[str], shingle_n: int, overlap_n: int, num_perm: int, bands: int):
        self.shingle_n, self.overlap_n, self.num_perm, self.bands = shingle_n, overlap_n, num_perm, bands
        self.shingles = shingle_rows(texts, shingle_n)
        self.all_shingles = np.unique(np.concatenate(self.shingles)) if self.shingles else np.zeros(0, np.uint64)
        self._low_bits = np.zeros(_LOW_MASK + 1, dtype=bool)
        self._low_bits[self.all_shingles & np.uint64(_LOW_MASK)] = True
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

    def suspects(self, flat: np.ndarray, offsets: np.ndarray, threshold: float) -> np.ndarray:
        """Rows (shingle hashes in a flat layout) that `match` could flag; it flags none of the others.

        With U the union of the held-out shingles and A a row's shingle set, a match needs either
        Jaccard(A, B) >= threshold for some held-out B, so |A & U| >= |A & B| >= threshold * |A|; or a
        shared overlap_n-gram, which holds overlap_n - shingle_n + 1 shingles of A, all in U. Rows
        without shingles stay suspects (two empty sets have Jaccard 1). Vectorised: ~10 ms per 10k rows.
        """
        n = len(offsets) - 1
        if threshold <= 0 or self.overlap_n < self.shingle_n:
            return np.arange(n)
        lengths = offsets[1:] - offsets[:-1]
        hit = self._in_union(flat)
        hits = np.bincount(np.repeat(np.arange(n), lengths)[hit], minlength=n)
        suspect = (lengths == 0) | (hits >= self.overlap_n - self.shingle_n + 1)
        maybe = np.flatnonzero(~suspect & (hits > 0))
        if len(maybe):  # |A & U| / |A| over unique shingles: sort each row's hashes, count first copies
            sub, sub_offsets = gather(flat, offsets, maybe)
            row = np.repeat(np.arange(len(maybe)), sub_offsets[1:] - sub_offsets[:-1])
            order = np.lexsort((sub, row))
            sub, row = sub[order], row[order]
            first = np.r_[True, (sub[1:] != sub[:-1]) | (row[1:] != row[:-1])]
            size = np.bincount(row[first], minlength=len(maybe))
            shared = np.bincount(row[first & self._in_union(sub)], minlength=len(maybe))
            suspect[maybe[shared / size >= threshold]] = True  # float division, as in jaccard()
        return np.flatnonzero(suspect)

    def _in_union(self, hashes: np.ndarray) -> np.ndarray:
        """hashes[k] in self.all_shingles, for millions of hashes: a 2**20-bit table of the low bits
        passes ~1% of unrelated hashes (for ~10k held-out shingles) on to an exact binary search."""
        maybe = np.flatnonzero(self._low_bits[hashes & np.uint64(_LOW_MASK)])
        found = np.zeros(len(hashes), dtype=bool)
        if len(maybe) and len(self.all_shingles):
            at = np.minimum(np.searchsorted(self.all_shingles, hashes[maybe]), len(self.all_shingles) - 1)
            found[maybe] = self.all_shingles[at] == hashes[maybe]
        return found

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
