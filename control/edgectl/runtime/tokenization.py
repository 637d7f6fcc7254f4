"""Preprocessing: prompt text -> the engine step's input tensors, with every limit checked."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgectl.runtime.contract import InvalidRequest, encode_word_lists


@dataclass
class PreprocessLimits:
    max_input_len: int
    max_output_len: int


def _as_text(value: Any, field: str) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as err:
            raise InvalidRequest(f"{field} is not valid UTF-8 (byte {err.start})") from None
    return str(value)


class Preprocessor:
    """Tokenizes with the model's own tokenizer and chat template."""

    def __init__(self, tokenizer: Any, limits: PreprocessLimits, end_id: int, pad_id: int):
        self._tokenizer = tokenizer
        self._limits = limits
        self.end_id = end_id
        self.pad_id = pad_id

    @classmethod
    def from_dir(cls, tokenizer_dir: Path, limits: PreprocessLimits, end_id: int, pad_id: int):
        from edgectl.runtime.chat_tokenizer import ChatTokenizer

        return cls(ChatTokenizer.from_dir(tokenizer_dir), limits, end_id, pad_id)

    def _encode(self, text: str) -> list[int]:
        return list(self._tokenizer.encode(text, add_special_tokens=False))

    def encode_prompt(self, query: str, apply_chat_template: bool) -> list[int]:
        if not apply_chat_template:
            return self._encode(query)
        if not getattr(self._tokenizer, "chat_template", None):
            raise InvalidRequest("apply_chat_template: this model has no chat template")
        rendered = self._tokenizer.apply_chat_template(
            [{"role": "user", "content": query}], add_generation_prompt=True, tokenize=False
        )
        return self._encode(rendered)

    def word_ids(self, words: Sequence[Any], field: str) -> list[list[int]]:
        """Token ids of each word, also in its leading-space form (how it appears mid-text)."""
        sequences: list[list[int]] = []
        for raw in words:
            word = _as_text(raw, field)
            if not word:
                continue
            for variant in (word, " " + word) if not word.startswith(" ") else (word,):
                ids = self._encode(variant)
                if ids and ids not in sequences:
                    sequences.append(ids)
        return sequences

    def prepare(
        self,
        query: Any,
        max_tokens: int,
        stop_words: Sequence[Any] = (),
        bad_words: Sequence[Any] = (),
        end_id: int | None = None,
        pad_id: int | None = None,
        apply_chat_template: bool = False,
        prompt_ids: list[int] | None = None,
    ) -> dict[str, np.ndarray]:
        """Tensors for one request (without the batch dimension); raises InvalidRequest.

        ``prompt_ids`` replaces encoding ``query`` (a prompt built elsewhere, e.g. RAG).
        """
        text = _as_text(query, "text_input")
        if not text.strip():
            raise InvalidRequest("text_input must not be empty")
        limits = self._limits
        if not 1 <= max_tokens <= limits.max_output_len:
            raise InvalidRequest(
                f"max_tokens must be between 1 and {limits.max_output_len} "
                f"(max_output_len), got {max_tokens}"
            )
        # Reject absurd prompts before tokenizing them (a token is at least one byte).
        if len(text) > limits.max_input_len * 64:
            raise InvalidRequest(
                f"text_input is {len(text)} characters; the limit is "
                f"max_input_len={limits.max_input_len} tokens"
            )
        ids = self.encode_prompt(text, apply_chat_template) if prompt_ids is None else prompt_ids
        if len(ids) > limits.max_input_len:
            raise InvalidRequest(
                f"text_input is {len(ids)} tokens; "
                f"the limit is max_input_len={limits.max_input_len}"
            )
        return {
            "INPUT_ID": np.asarray(ids, dtype=np.int32),
            "REQUEST_INPUT_LEN": np.asarray([len(ids)], dtype=np.int32),
            "REQUEST_OUTPUT_LEN": np.asarray([max_tokens], dtype=np.int32),
            "STOP_WORDS_IDS": encode_word_lists(self.word_ids(stop_words, "stop_words")),
            "BAD_WORDS_IDS": encode_word_lists(self.word_ids(bad_words, "bad_words")),
            "OUT_END_ID": np.asarray([self.end_id if end_id is None else end_id], dtype=np.int32),
            "OUT_PAD_ID": np.asarray([self.pad_id if pad_id is None else pad_id], dtype=np.int32),
        }
