"""An independent, deliberately naive byte-level BPE (GPT-2 style) used to cross-check the tokenizer.

It follows the published algorithm directly: split out special tokens, split digits one by one, split
the rest with GPT-2's regex, map bytes to unicode, then merge the lowest-ranked adjacent pair until
none is left. Slow, but shares no code with the `tokenizers` library.
"""

import regex

GPT2_SPLIT = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")
DIGITS = regex.compile(r"\p{N}")


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


class ReferenceBPE:
    def __init__(self, tokens, merges, special):
        self.vocab = {t: i for i, t in enumerate(tokens)}
        self.ranks = {tuple(m.split(" ", 1)): r for r, m in enumerate(merges)}
        self.special = sorted(special, key=len, reverse=True)
        self.byte_map = bytes_to_unicode()

    def _bpe(self, word):
        parts = list(word)
        while len(parts) > 1:
            pairs = [(self.ranks.get((a, b), 1 << 30), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
            rank, i = min(pairs)
            if rank == 1 << 30:
                break
            parts[i : i + 2] = [parts[i] + parts[i + 1]]
        return parts

    def _pieces(self, text):
        out = []
        last = 0
        for m in DIGITS.finditer(text):
            out.append(text[last : m.start()])
            out.append(m.group())
            last = m.end()
        out.append(text[last:])
        return [p for p in out if p]

    def encode(self, text):
        ids = []
        pattern = "(" + "|".join(regex.escape(s) for s in self.special) + ")"
        for chunk in regex.split(pattern, text):
            if not chunk:
                continue
            if chunk in self.special:
                ids.append(self.vocab[chunk])
                continue
            for piece in self._pieces(chunk):
                for word in GPT2_SPLIT.findall(piece):
                    mapped = "".join(self.byte_map[b] for b in word.encode("utf-8"))
                    ids.extend(self.vocab[p] for p in self._bpe(mapped))
        return ids
