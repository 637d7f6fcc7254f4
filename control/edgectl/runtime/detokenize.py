"""Streaming-safe detokenization.

Two rules keep streamed text identical to the non-streamed text:

* the engine step only emits a chunk of ids whose bytes end on a complete UTF-8
  character (:class:`StreamHoldback`), so no chunk splits a multibyte character;
* postprocessing decodes every chunk behind a fixed *anchor* token
  (:class:`AnchoredDecoder`), so tokenizers that drop a leading space at the
  start of a decode (SentencePiece's Metaspace, ``clean_up_tokenization_spaces``)
  treat every chunk as the middle of a text.  Decoding the whole output the same
  way gives the same characters as the concatenated stream.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

REPLACEMENT_CHAR = "\ufffd"


class Decoder(Protocol):
    """The part of a tokenizer this module needs (``tokenizers`` and ``transformers`` both fit)."""

    def decode(self, ids: list[int], skip_special_tokens: bool = ...) -> str: ...


class AnchoredDecoder:
    """Decodes a chunk of ids as if it followed other text."""

    def __init__(self, tokenizer: Decoder, anchor_id: int) -> None:
        self._tokenizer = tokenizer
        self._anchor_id = anchor_id
        self._anchor_len = len(self._decode([anchor_id]))

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=True)

    def decode(self, ids: Sequence[int]) -> str:
        if len(ids) == 0:
            return ""
        return self._decode([self._anchor_id, *map(int, ids)])[self._anchor_len :]


def find_anchor_id(encode: Callable[[str], list[int]]) -> int:
    """Pick a token that decodes to one plain letter, in any common vocabulary."""
    for text in ("a", "x", "0", "."):
        ids = encode(text)
        if len(ids) == 1:
            return ids[0]
    raise ValueError("the tokenizer has no single-token letter to anchor decoding on")


class StreamHoldback:
    """Decides how much of a request's pending ids may be sent now.

    Ids are held back while (a) their text ends inside a multibyte character, or
    (b) their tail could still grow into a stop word, whose ids must never reach
    the client.
    """

    def __init__(self, decoder: AnchoredDecoder, stop_words: Sequence[Sequence[int]]) -> None:
        self._decoder = decoder
        self._stop_words = [list(w) for w in stop_words if w]

    def stop_match(self, generated: Sequence[int]) -> int:
        """Length of the stop word that ``generated`` ends with, or 0."""
        for word in self._stop_words:
            n = len(word)
            if n <= len(generated) and list(generated[-n:]) == word:
                return n
        return 0

    def _stop_prefix_len(self, pending: Sequence[int]) -> int:
        """Longest tail of ``pending`` that is a proper prefix of some stop word."""
        longest = 0
        for word in self._stop_words:
            for n in range(min(len(word) - 1, len(pending)), longest, -1):
                if list(pending[-n:]) == word[:n]:
                    longest = n
                    break
        return longest

    def releasable(self, pending: Sequence[int], final: bool) -> int:
        """How many leading ids of ``pending`` can be emitted now."""
        if final:
            return len(pending)
        count = len(pending) - self._stop_prefix_len(pending)
        while count > 0 and self._decoder.decode(pending[:count]).endswith(REPLACEMENT_CHAR):
            count -= 1
        return count
