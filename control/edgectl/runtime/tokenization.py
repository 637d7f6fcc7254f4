"""Preprocessing: prompt text -> the engine step's input tensors, with every limit checked."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgectl.runtime.contract import InvalidRequest, encode_word_lists

CHAT_ROLES = ("system", "user", "assistant", "tool")


@dataclass
class PreprocessLimits:
    max_input_len: int
    max_output_len: int


def parse_messages(raw: Any) -> list[dict[str, str]]:
    """The ``messages`` extension: one JSON string holding ``[{"role", "content"}, ...]``."""
    import json

    try:
        messages = json.loads(_as_text(raw, "messages"))
    except ValueError as err:
        raise InvalidRequest(f"messages is not valid JSON: {err}") from None
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages must be a non-empty JSON list of {role, content} objects")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise InvalidRequest(f"messages[{index}] must be an object with a string content")
        if message.get("role") not in CHAT_ROLES:
            raise InvalidRequest(
                f"messages[{index}].role must be one of {', '.join(CHAT_ROLES)}, "
                f"got {message.get('role')!r}"
            )
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def stack_rows(
    rows: Sequence[dict[str, np.ndarray]], fills: dict[str, Any]
) -> dict[str, np.ndarray]:
    """Per-row tensors -> one batch, ragged ones padded at the end with ``fills[name]``."""
    stacked = {}
    for name in rows[0]:
        arrays = [row[name] for row in rows]
        width = max(array.shape[-1] for array in arrays)
        shape = (len(arrays), *arrays[0].shape[:-1], width)
        batch = np.full(shape, fills.get(name, 0), dtype=arrays[0].dtype)
        for index, array in enumerate(arrays):
            batch[index, ..., : array.shape[-1]] = array
        stacked[name] = batch
    return stacked


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
        return self.encode_chat([{"role": "user", "content": query}], "apply_chat_template")

    def encode_chat(self, messages: list[dict[str, str]], field: str = "messages") -> list[int]:
        """Render a conversation with the model's own chat template, then tokenize it."""
        if not getattr(self._tokenizer, "chat_template", None):
            raise InvalidRequest(f"{field}: this model has no chat template")
        try:
            rendered = self._tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=False
            )
        except ValueError as err:  # the template refused the conversation
            raise InvalidRequest(f"{field}: {err}") from None
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
        messages: Any = None,
        prompt_ids: list[int] | None = None,
    ) -> dict[str, np.ndarray]:
        """Tensors for one request row (without the batch dimension); raises InvalidRequest.

        ``prompt_ids`` replaces encoding ``query`` (a prompt built elsewhere, e.g. RAG).
        """
        conversation = parse_messages(messages) if messages is not None else None
        text = _as_text(query, "text_input") if conversation is None else ""
        if conversation is None and not text.strip():
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
        if prompt_ids is not None:
            ids = prompt_ids
        elif conversation is not None:
            ids = self.encode_chat(conversation)
        else:
            ids = self.encode_prompt(text, apply_chat_template)
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
            # Decoder-only models: no decoder prompt, no bias, no prompt table.
            "DECODER_INPUT_ID": np.asarray([self.pad_id], dtype=np.int32),
            "REQUEST_DECODER_INPUT_LEN": np.asarray([0], dtype=np.int32),
            "EMBEDDING_BIAS": np.zeros(0, dtype=np.float32),
            "OUT_PROMPT_TABLE_EXTRA_IDS": np.zeros(0, dtype=np.uint64),
        }
