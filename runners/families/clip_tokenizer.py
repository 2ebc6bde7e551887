"""open_clip's ``SimpleTokenizer`` (CLIP, MobileCLIP) with its cost bounded by the context.

Upstream, byte-pair encoding of one word takes time quadratic in the word's length (a
2,000-character word takes a fifth of a second, a 100,000-character one minutes), its cache
keeps every word ever seen (memory grows with every new word), and a text is encoded to the
end even though only the first ``context_length`` tokens are kept. Here:

* :func:`merge` applies upstream's merges with a heap, in ``O(n log n)``, with the same result;
* a word longer than :data:`MAX_WORD_SYMBOLS` byte symbols is encoded as consecutive pieces
  of that length, so no single word is ever merged at once beyond that length;
* the cache is a bounded LRU (:data:`CACHE_SIZE` words); the special tokens live outside it,
  so they are never evicted and keep mapping to themselves;
* encoding stops once the context is full.

Texts whose words are all shorter than :data:`MAX_WORD_SYMBOLS` bytes get exactly upstream's
tokens (the same truncation to the context, the same end-of-text token).

:func:`count_tokens` counts what the tower sees of each text, for either kind of tokenizer
open_clip gives.
"""

from __future__ import annotations

import heapq
import threading
from typing import Mapping, Sequence

import torch
from cachetools import LRUCache
from open_clip.tokenizer import HFTokenizer, SimpleTokenizer

# Byte symbols: beyond the longest words of real text (a word here is a run of letters; 512
# bytes are 170 CJK characters without punctuation). Merging a random word of this length
# # takes about 1 ms and yields more tokens than the context holds, so a word the entry service
# cut to 77 x 32 characters costs one such piece instead of a merge of all 2,464.
MAX_WORD_SYMBOLS = 512
CACHE_SIZE = 10_000  # words; the Hugging Face tokenizers' own BPE cache holds as many

Pair = tuple[str, str]


def merge(symbols: Sequence[str], ranks: Mapping[Pair, int], pairs: Sequence[Pair]) -> list[str]:
    """Upstream's byte-pair merge loop, in ``O(n log n)``: repeatedly merge every occurrence,
    left to right, of the adjacent pair of lowest rank (``pairs[rank]`` is the pair of a rank).

    Upstream rescans the whole word for every merge. Here the adjacent pairs wait in a heap;
    all occurrences of the lowest rank are taken together and merged left to right, and only
    the pairs next to a merged symbol enter the heap afterwards, as upstream's next scan would
    find them. Entries made stale by a merge are skipped when they come up.
    """
    text = list(symbols)
    count = len(text)
    following = list(range(1, count + 1))
    preceding = list(range(-1, count - 1))
    alive = [True] * count

    def ranked(left: int) -> tuple[int, int] | None:
        right = following[left]
        rank = ranks.get((text[left], text[right])) if right < count else None
        return None if rank is None else (rank, left)

    heap = [entry for entry in map(ranked, range(count - 1)) if entry is not None]
    heapq.heapify(heap)
    while heap:
        rank = heap[0][0]
        starts = set()
        while heap and heap[0][0] == rank:
            starts.add(heapq.heappop(heap)[1])
        first, second = pairs[rank]
        merged = []
        for left in sorted(starts):
            right = following[left]
            if not alive[left] or right >= count or text[left] != first or text[right] != second:
                continue  # stale: one of the two took part in another merge
            text[left] = first + second
            alive[right] = False
            following[left] = following[right]
            if following[right] < count:
                preceding[following[right]] = left
            merged.append(left)
        for left in merged:
            if not alive[left]:
                continue
            for start in (preceding[left], left):
                entry = ranked(start) if start >= 0 and alive[start] else None
                if entry is not None:
                    heapq.heappush(heap, entry)
    return [symbol for symbol, live in zip(text, alive) if live]


class BoundedSimpleTokenizer(SimpleTokenizer):
    """A ``SimpleTokenizer`` whose work and memory are bounded (see the module docstring)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._bound()

    @classmethod
    def adopt(cls, tokenizer: SimpleTokenizer) -> BoundedSimpleTokenizer:
        """The bounded version of an already configured tokenizer (vocabulary, context length,
        cleaning: what ``open_clip.get_tokenizer`` chose), sharing its tables."""
        bounded = cls.__new__(cls)
        bounded.__dict__.update(tokenizer.__dict__)
        bounded._bound()
        return bounded

    def _bound(self) -> None:
        # Upstream seeds its cache with the special tokens, which map to themselves.
        self._specials: dict[str, str] = dict(self.cache)
        self.cache = LRUCache(CACHE_SIZE)
        # The Encoder tokenises in several threads at once (CPU lanes, token counts beside a
        # forward pass); an LRU cache's reads reorder it, so every access holds this lock.
        self._cache_lock = threading.Lock()
        self._pairs: list[Pair] = [pair for pair, _ in sorted(self.bpe_ranks.items(), key=lambda item: item[1])]

    def bpe(self, token: str) -> str:
        """Upstream's ``bpe`` (same result), through :func:`merge` and the bounded caches."""
        if token in self._specials:
            return self._specials[token]
        with self._cache_lock:
            cached = self.cache.get(token)
        if cached is not None:
            return cached
        if len(token) == 1:
            return token + "</w>"
        word = " ".join(merge([*token[:-1], token[-1] + "</w>"], self.bpe_ranks, self._pairs))
        with self._cache_lock:
            self.cache[token] = word
        return word

    def encode(self, text: str) -> list[int]:
        """Upstream's ``encode`` with over-long words in pieces, stopping once
        ``context_length`` tokens are known (the call cuts the rest anyway; the one extra token
        keeps upstream's truncation decision)."""
        tokens: list[int] = []
        for match in self.pat.finditer(self.clean_fn(text)):
            word = "".join(self.byte_encoder[byte] for byte in match.group().encode("utf-8"))
            for start in range(0, len(word), MAX_WORD_SYMBOLS):
                piece = self.bpe(word[start:start + MAX_WORD_SYMBOLS])
                tokens.extend(self.encoder[symbol] for symbol in piece.split(" "))
                if self.context_length and len(tokens) >= self.context_length:
                    return tokens
        return tokens


def bounded(tokenizer: object) -> object:
    """``tokenizer`` with its cost bounded: a ``SimpleTokenizer`` is adopted by
    :class:`BoundedSimpleTokenizer`; other kinds (open_clip's ``HFTokenizer`` over a Rust
    tokenizer, linear in the text with a bounded cache) are returned as they are."""
    return BoundedSimpleTokenizer.adopt(tokenizer) if isinstance(tokenizer, SimpleTokenizer) else tokenizer


def through_last_end_of_text(tokens: torch.Tensor, eot_token_id: int) -> list[int]:
    """How many tokens of each row of ``SimpleTokenizer`` output come before its padding: up to
    and including the row's last end-of-text token (the one the tokenizer appends, or puts
    last when it truncates).

    Padding is id 0, which is also a real token ("!" inside a word, as in ``"!$"``), so
    counting non-zero ids would miss real tokens; a text that spells ``<end_of_text>`` holds
    an end-of-text token before the appended one, so the first one would miss the rest.
    """
    context = tokens.shape[1]
    after_last = (tokens.flip(1) == eot_token_id).int().argmax(dim=1)
    return (context - after_last).tolist()


def count_tokens(tokenizer: SimpleTokenizer | HFTokenizer, texts: list[str]) -> list[int]:
    """The tokens of each text that ``tokenizer`` gives the tower, special tokens included and
    padding not: a ``SimpleTokenizer``'s through its end-of-text token
    (:func:`through_last_end_of_text`), an ``HFTokenizer``'s those that are not the Hugging Face
    tokenizer's padding id (both pad to the full context)."""
    tokens = tokenizer(texts)
    if isinstance(tokenizer, SimpleTokenizer):
        return through_last_end_of_text(tokens, tokenizer.eot_token_id)
    return (tokens != tokenizer.tokenizer.pad_token_id).sum(dim=1).tolist()
