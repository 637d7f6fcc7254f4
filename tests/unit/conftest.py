"""Shared fixtures: a tiny real byte-level BPE tokenizer trained in memory (no download)."""

from __future__ import annotations

import pytest
from tokenizers import ByteLevelBPETokenizer

from edgectl.runtime.detokenize import AnchoredDecoder, find_anchor_id

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello world, hello there, hello again.",
    "Café au lait, crème brûlée and a piñata.",
    "naïve façade, déjà vu, über cool, señor.",
    "東京は日本の首都です。",
    "北京是中国的首都。",
    "ソウルは韓国の首都です。",
    "Rocket launch 🚀 and party 🎉 with pizza 🍕!",
    "What is the capital of France? Paris is the capital.",
    "Streaming text must match the non-streamed text exactly.",
]


class HFLikeTokenizer:
    """The ``transformers``-style surface that Preprocessor and AnchoredDecoder use."""

    def __init__(self, tokenizer: ByteLevelBPETokenizer, chat_template: str | None = None):
        self._tokenizer = tokenizer
        self.chat_template = chat_template

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return self._tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, messages, add_generation_prompt: bool, tokenize: bool) -> str:
        assert not tokenize
        turns = "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in messages)
        return turns + ("<assistant>" if add_generation_prompt else "")


@pytest.fixture(scope="session")
def bpe_model() -> ByteLevelBPETokenizer:
    tokenizer = ByteLevelBPETokenizer()
    tokenizer.train_from_iterator(_CORPUS * 4, vocab_size=400, min_frequency=2, show_progress=False)
    return tokenizer


@pytest.fixture(scope="session")
def bpe(bpe_model) -> HFLikeTokenizer:
    """No chat template."""
    return HFLikeTokenizer(bpe_model)


@pytest.fixture(scope="session")
def chat_bpe(bpe_model) -> HFLikeTokenizer:
    """With a (toy) chat template: ``<user>...</user><assistant>``."""
    return HFLikeTokenizer(bpe_model, chat_template="{% for m in messages %}...{% endfor %}")


@pytest.fixture(scope="session")
def anchored(bpe: HFLikeTokenizer) -> AnchoredDecoder:
    return AnchoredDecoder(bpe, find_anchor_id(bpe.encode))
