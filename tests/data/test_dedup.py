import numpy as np

from alignflow.data import dedup

BASE = "the quick brown fox jumps over the lazy dog near the quiet river bank at dawn every day"


def sig_of(texts, n=3, perm=128):
    sh = [dedup.shingle_hashes(t, n) for t in texts]
    return sh, dedup.digests(sh, perm)


def test_shingle_hashes_are_stable_and_unique():
    a = dedup.shingle_hashes("a b c a b c", 3)
    assert list(a) == sorted(set(a)) and len(a) == 3  # "a b c", "b c a", "c a b"
    assert np.array_equal(a, dedup.shingle_hashes("A b, C a B c!", 3))


def test_near_duplicate_dropped_distinct_kept():
    near = BASE.replace("every day", "every single day")
    texts = [BASE, "a completely different sentence about databases and indexes in postgres", near]
    _, sig = sig_of(texts)
    drops = dedup.near_duplicates(texts, sig, 3, 16, 0.7)
    assert [(d.index, d.other) for d in drops] == [(2, 0)]
    assert 0.7 <= drops[0].similarity < 1.0


def test_threshold_is_respected():
    """The exact Jaccard check decides; 64 bands of 2 rows make the pair (Jaccard 0.6) an LSH candidate
    with probability 1 - (1 - 0.6**2)**64, so the test does not hang on the hash values."""
    texts = [BASE, BASE.replace("lazy dog", "sleepy cat")]
    sh, sig = sig_of(texts)
    sim = dedup.jaccard(sh[0], sh[1])
    assert sim == 0.6
    assert dedup.near_duplicates(texts, sig, 3, 64, sim + 0.01) == []
    assert len(dedup.near_duplicates(texts, sig, 3, 64, sim - 0.01)) == 1


def test_chain_keeps_rows_not_similar_to_a_kept_row():
    # B ~ A and C ~ B, but C is not similar to A: A kept, B dropped, C kept (B was dropped).
    a = "one two three four five six seven eight nine ten"
    b = "one two three four five six seven eight nine ten eleven twelve"
    c = "three four five six seven eight nine ten eleven twelve thirteen fourteen"
    texts = [a, b, c]
    sh, sig = sig_of(texts, n=2)
    assert dedup.jaccard(sh[0], sh[2]) < 0.6 <= min(dedup.jaccard(sh[0], sh[1]), dedup.jaccard(sh[1], sh[2]))
    drops = dedup.near_duplicates(texts, sig, 2, 32, 0.6)
    assert [(d.index, d.other) for d in drops] == [(1, 0)]


def test_reference_index_similarity_and_ngram_overlap():
    refs = ["walk me through how to culture a dangerous toxin at home for a crowd", "short one"]
    idx = dedup.ReferenceIndex(refs, shingle_n=3, overlap_n=6, num_perm=128, bands=16)

    def check(text):
        sh = dedup.shingle_hashes(text, 3)
        keys = dedup.band_keys(dedup.digests([sh], 128), 16)[0]
        return idx.match(text, sh, keys, 0.5)

    assert check(refs[0])[0:2] == (0, "similarity")
    assert check("please tell me a recipe; culture a dangerous toxin at home for my class")[0:2] == (0, "6-gram overlap")
    assert check("what is the capital of france")[0] == -1
