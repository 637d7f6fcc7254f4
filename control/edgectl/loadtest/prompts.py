"""Synthetic prompts with an exact token count, like genai-perf's synthetic inputs.

Prompts are seeded random English words, cut to the target length with the served
model's own tokenizer, and every prompt differs from its first words on, so the
engine's prefix cache cannot turn a load test into a cache benchmark.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

Encode = Callable[[str], list[int]]
Decode = Callable[[list[int]], str]

_WORDS = """
the of and to in is was for on that with as by at from his her an were are which this be
or has had not but their one all new more also first its after two who they been have
time year people way day man thing woman life child world school state family student
group country problem hand part place case week company system program question work
government number night point home water room mother area money story fact month lot
right study book eye job word business issue side kind head house service friend father
power hour game line end member law car city community name president team minute idea
body information back parent face others level office door health person art war history
party result change morning reason research girl guy moment air teacher force education
river mountain garden window bridge market harbor village light music paper letter road
""".split()


def synthetic_prompt(encode: Encode, decode: Decode, tokens: int, rng: random.Random) -> str:
    """Random words cut to ``tokens`` tokens; re-encoding gives exactly ``tokens`` when the
    tokenizer allows it (a cut inside a word can re-merge, so nearby cuts are tried)."""
    words: list[str] = []
    ids: list[int] = []
    while len(ids) < tokens + 8:
        words.extend(rng.choice(_WORDS) for _ in range(max(8, tokens)))
        ids = encode(" ".join(words))
    best = decode(ids[:tokens])
    for cut in (tokens, tokens + 1, tokens - 1, tokens + 2, tokens - 2):
        if 0 < cut <= len(ids):
            text = decode(ids[:cut])
            if len(encode(text)) == tokens:
                return text
    return best


def prompt_pool(
    encode: Encode, decode: Decode, count: int, tokens: int, seed: int = 0
) -> list[dict[str, object]]:
    """``count`` distinct prompts with their real token counts (what the records report)."""
    rng = random.Random(seed)
    pool = []
    for _ in range(count):
        text = synthetic_prompt(encode, decode, tokens, rng)
        pool.append({"text": text, "tokens": len(encode(text))})
    return pool


class PromptTokenizer(NamedTuple):
    """Encode/decode without special tokens, and the vocabulary size."""

    encode: Encode
    decode: Decode
    vocab_size: int

    @property
    def unused_id(self) -> int:
        """The vocabulary's last id: a reserved token the model does not emit in practice."""
        return self.vocab_size - 1


def load_tokenizer(path: Path) -> PromptTokenizer:
    """``tokenizer.json`` (or a directory holding it)."""
    from tokenizers import Tokenizer

    file = path / "tokenizer.json" if path.is_dir() else path
    tokenizer = Tokenizer.from_file(str(file))
    return PromptTokenizer(
        lambda text: tokenizer.encode(text, add_special_tokens=False).ids,
        lambda ids: tokenizer.decode(ids),
        tokenizer.get_vocab_size(),
    )
