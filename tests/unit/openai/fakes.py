"""A fake Triton for the gateway's unit tests: scripted Pieces, every request recorded."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from edgectl.openai.ensemble import INPUT_TYPES, Capabilities, Piece
from edgectl.openai.errors import ApiError

FULL = Capabilities(
    name="ensemble",
    inputs=frozenset(INPUT_TYPES),
    outputs=frozenset(
        {
            "text_output",
            "finish_reason",
            "num_input_tokens",
            "num_output_tokens",
            "sequence_index",
            "output_log_probs",
            "cum_log_probs",
        }
    ),  # fmt: skip
    max_output_len=128,
)
OLD = Capabilities(
    name="old",
    inputs=frozenset(
        {
            "text_input",
            "max_tokens",
            "stop_words",
            "top_k",
            "top_p",
            "temperature",
            "random_seed",
            "min_length",
            "stream",
            "apply_chat_template",
        }
    ),  # fmt: skip
    outputs=frozenset({"text_output"}),
)
WORDS = ["Paris", " is", " the", " capital", "."]


class FakeTriton:
    """Answers every request with WORDS (one per response when streaming)."""

    def __init__(self, *models: Capabilities, error: ApiError | None = None) -> None:
        self.models = {caps.name: caps for caps in (models or (FULL, OLD))}
        self.sent: list[dict[str, Any]] = []
        self.error = error
        self.cancelled = 0

    async def ready(self) -> bool:
        return True

    async def ready_models(self) -> list[str]:
        return sorted(self.models)

    async def capabilities(self, model: str) -> Capabilities:
        if model not in self.models:
            raise ApiError(404, f"Request for unknown model: '{model}'")
        return self.models[model]

    async def close(self) -> None:
        pass

    async def generate(self, caps: Capabilities, inputs: dict[str, Any]) -> AsyncIterator[Piece]:
        self.sent.append(inputs)
        if self.error is not None:
            raise self.error
        full = caps.returns("finish_reason")
        words = WORDS[: inputs["max_tokens"]]
        reason = "length" if len(words) == inputs["max_tokens"] else "stop"
        sequences = inputs.get("num_return_sequences", 1)
        try:
            if inputs.get("stream"):
                for position, word in enumerate(words):
                    last = position == len(words) - 1
                    for index in range(sequences):
                        yield self._piece(full, inputs, word, index, position + 1, last and reason)
                yield Piece(final=True)
            else:
                for index in range(sequences):
                    yield self._piece(full, inputs, "".join(words), index, len(words), reason)
                yield Piece(final=True)
        except GeneratorExit:
            self.cancelled += 1
            raise

    @staticmethod
    def _piece(full: bool, inputs: dict, text: str, index: int, count: int, reason) -> Piece:
        if not full:
            return Piece(text=text)
        return Piece(
            text=text, index=index, finish_reason=reason or None,
            input_tokens=7 if inputs.get("return_num_input_tokens") else None,
            output_tokens=count if inputs.get("return_num_output_tokens") else None,
            log_probs=[-0.5] * (1 if inputs.get("stream") else count)
            if inputs.get("return_log_probs") else [],
        )  # fmt: skip
