"""CLIP's text tokenizer: byte-level BPE over OpenAI CLIP's vocabulary of 49 408 tokens.

Reimplements ``SimpleTokenizer`` of OpenAI CLIP (``clip/simple_tokenizer.py``) and open_clip
(``src/open_clip/tokenizer.py``, default ``clean="lower"``) with open_clip's ``tokenize``: the ids
``[<start_of_text>] + BPE(text) + [<end_of_text>]``, cut to the context length with the last kept slot set to
``<end_of_text>``, then padded. The merge list is the vendored ``assets/bpe_simple_vocab_16e6.txt.gz`` (MIT, see
``assets/LICENSE-CLIP-BPE.txt``); nothing is downloaded.

Cleaning differs from the originals in one respect: they first run ``ftfy.fix_text``, which jaxir does not depend
on. jaxir keeps the steps that ordinary prompts meet — HTML unescaping (twice, as the originals), Unicode NFC
(ftfy's default normalisation), whitespace collapsing, lower case — so text that ftfy would *repair* tokenises
differently: mojibake (``"cafÃ©"``), curly quotes (ftfy straightens ``’`` to ``'``, which changes how ``"dog’s"``
splits), ligatures (``ﬁ``), full-width forms, terminal escapes and control characters.

Padding: open_clip pads with 0 (SD 2.x, DiffBIR, SDXL's OpenCLIP bigG encoder); transformers' ``CLIPTokenizer``
with ``padding="max_length"`` pads with ``<|endoftext|>`` = 49407 (SDXL's CLIP ViT-L encoder), see ``pad_token``.
transformers' tokenizer also skips the HTML unescaping, so prompts containing entities such as ``&amp;`` are the
one other place where the two references differ.
"""

from __future__ import annotations

import functools
import gzip
import html
import importlib.resources
import itertools
import unicodedata
from collections.abc import Sequence

import numpy as np

SOT = 49406                 # <start_of_text>
EOT = 49407                 # <end_of_text>
CONTEXT_LENGTH = 77
VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
NUM_MERGES = 49152 - 256 - 2   # the originals read this many merge lines, after the version header
SPECIAL = {"<start_of_text>": SOT, "<end_of_text>": EOT}
CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")
END_OF_WORD = "</w>"


@functools.cache
def byte_alphabet() -> tuple[str, ...]:
    """The printable stand-in for each byte value 0…255 (``bytes_to_unicode`` of the originals): printable
    Latin-1 bytes stand for themselves, the other bytes, in increasing order, for ``chr(256 + n)``."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    table = {b: chr(b) for b in printable} | {b: chr(256 + n) for n, b in enumerate(others)}
    return tuple(table[b] for b in range(256))


@functools.cache
def vocabulary() -> tuple[dict[str, int], dict[tuple[str, str], int]]:
    """``(token → id, merge pair → rank)``. Ids: the 256 byte symbols (printable ones first, as the originals
    order them), the same with the end-of-word mark, one per merge in rank order, then the two special tokens."""
    with importlib.resources.files("jaxir.models").joinpath("assets", VOCAB_FILE).open("rb") as f:
        lines = gzip.decompress(f.read()).decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1:1 + NUM_MERGES]]
    alphabet = byte_alphabet()
    symbols = sorted(alphabet, key=ord)  # printable bytes (all < 256) first, then chr(256 + n)
    tokens = symbols + [s + END_OF_WORD for s in symbols] + ["".join(m) for m in merges] + list(SPECIAL)
    return {t: i for i, t in enumerate(tokens)}, {m: r for r, m in enumerate(merges)}


def clean(text: str) -> str:
    """The originals' ``clean="lower"`` minus ftfy (see the module docstring)."""
    text = unicodedata.normalize("NFC", html.unescape(html.unescape(text)))
    return " ".join(text.split()).lower()


def _char_class(ch: str) -> str:
    """``" "`` (whitespace), ``"L"`` (letter), ``"N"`` (number) or ``"O"`` (anything else)."""
    if ch.isspace():
        return " "
    major = unicodedata.category(ch)[0]
    return major if major in "LN" else "O"


def pre_tokenize(text: str) -> list[str]:
    """Split cleaned text into words as the originals' pattern
    ``<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+`` does with
    ``regex.findall``, without the ``regex`` package: at each position the first alternative that matches wins,
    letters and "other" characters form greedy runs, every digit is a word of its own, whitespace is dropped."""
    words, i = [], 0
    while i < len(text):
        prefix = next((p for p in (*SPECIAL, *CONTRACTIONS) if text.startswith(p, i)), None)
        if prefix is not None:
            words.append(prefix)
            i += len(prefix)
            continue
        kind = _char_class(text[i])
        j = i + 1
        if kind in "LO":
            while j < len(text) and _char_class(text[j]) == kind:
                j += 1
        if kind != " ":
            words.append(text[i:j])
        i = j
    return words


class CLIPTokenizer:
    """``tokenizer(texts) -> (B, context_length) int32``, as open_clip's ``tokenize`` (``pad_token`` 0) or
    transformers' ``CLIPTokenizer(padding="max_length", truncation=True)`` (``pad_token`` 49407)."""

    def __init__(self, context_length: int = CONTEXT_LENGTH, pad_token: int = 0):
        if context_length < 2:
            raise ValueError(f"context_length must leave room for the start and end tokens, got {context_length}")
        self.context_length = context_length
        self.pad_token = pad_token
        self.encoder, self.ranks = vocabulary()
        self.alphabet = byte_alphabet()
        self._cache: dict[str, list[int]] = {}

    def bpe(self, word: str) -> list[int]:
        """The ids of one pre-tokenised word: its UTF-8 bytes as symbols, the last marked end-of-word, then the
        lowest-ranked adjacent pair merged everywhere (left to right) until no listed pair is left."""
        if word in SPECIAL:
            return [SPECIAL[word]]
        if word not in self._cache:
            parts = [self.alphabet[b] for b in word.encode("utf-8")]
            parts[-1] += END_OF_WORD
            while len(parts) > 1:
                pairs = {pair for pair in itertools.pairwise(parts) if pair in self.ranks}
                if not pairs:
                    break
                best = min(pairs, key=self.ranks.__getitem__)
                merged, i = [], 0
                while i < len(parts):
                    if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                        merged.append(parts[i] + parts[i + 1])
                        i += 2
                    else:
                        merged.append(parts[i])
                        i += 1
                parts = merged
            self._cache[word] = [self.encoder[p] for p in parts]
        return self._cache[word]

    def encode(self, text: str) -> list[int]:
        """The BPE ids of ``text``, without start/end tokens or truncation."""
        return [i for word in pre_tokenize(clean(text)) for i in self.bpe(word)]

    def __call__(self, texts: str | Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            texts = [texts]
        out = np.full((len(texts), self.context_length), self.pad_token, np.int32)
        for row, text in zip(out, texts, strict=True):
            ids = [SOT, *self.encode(text)][:self.context_length - 1] + [EOT]
            row[:len(ids)] = ids
        return out
