"""The TensorRT-LLM backend's tensor contract, and the checks every engine step shares.

Names follow NVIDIA's ``inflight_batcher_llm`` models so that a client written
for a TensorRT-LLM ensemble works unchanged against ours.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

# Ensemble input name -> engine-step input name, where they differ.
ENSEMBLE_TO_ENGINE = {
    "top_k": "runtime_top_k",
    "top_p": "runtime_top_p",
    "stream": "streaming",
}


class InvalidRequest(ValueError):
    """A request the engine step refuses; the message names the field and its limit."""


def encode_word_lists(word_ids: Sequence[Sequence[int]]) -> np.ndarray:
    """Pack token sequences into TensorRT-LLM's ``[2, N]`` stop/bad-words layout.

    Row 0 holds the concatenated ids, row 1 the end offset of each sequence,
    padded with -1 (the layout ``stop_words_list`` / ``bad_words_list`` use).
    """
    flat: list[int] = []
    offsets: list[int] = []
    for ids in word_ids:
        if not ids:
            continue
        flat.extend(int(i) for i in ids)
        offsets.append(len(flat))
    width = max(len(flat), 1)
    packed = np.full((2, width), -1, dtype=np.int32)
    packed[0, : len(flat)] = flat
    packed[1, : len(offsets)] = offsets
    return packed


def decode_word_lists(packed: np.ndarray | None) -> list[list[int]]:
    """Inverse of :func:`encode_word_lists`; accepts ``[2, N]`` or ``[1, 2, N]``."""
    if packed is None:
        return []
    array = np.asarray(packed)
    if array.ndim == 3:
        if array.shape[0] != 1:
            raise InvalidRequest("stop_words_list must hold one [2, N] list per request")
        array = array[0]
    if array.ndim != 2 or array.shape[0] != 2:
        raise InvalidRequest(
            f"stop_words_list/bad_words_list must have shape [2, N], got {list(array.shape)}"
        )
    ids, offsets = array[0].tolist(), array[1].tolist()
    words: list[list[int]] = []
    start = 0
    for end in offsets:
        if end < 0:
            break
        if end <= start or end > len(ids):
            raise InvalidRequest(
                f"stop/bad words offsets must increase and stay within {len(ids)} ids, got {end}"
            )
        words.append([int(i) for i in ids[start:end]])
        start = end
    return words


GUIDE_TYPES = ("json", "json_schema", "regex", "ebnf_grammar")
MAX_BEAM_WIDTH = 8
MAX_RETURN_SEQUENCES = 8


@dataclass
class SamplingParams:
    """Per-request generation settings with TensorRT-LLM's meanings and defaults.

    ``top_p <= 0`` means "not set" and an unset ``top_k`` is 0, as in NVIDIA's
    backend; ``seed`` defaults to 0 as in TensorRT-LLM's executor, so an unseeded
    sampled request is reproducible there and here.
    """

    max_new_tokens: int
    end_id: int | None = None
    top_k: int = 0
    top_p: float = 0.0
    temperature: float | None = None
    seed: int | None = None
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    min_length: int = 0
    stop_words: list[list[int]] = field(default_factory=list)
    streaming: bool = False
    exclude_input_in_output: bool = True
    beam_width: int = 1
    num_return_sequences: int | None = None
    length_penalty: float = 0.0
    early_stopping: bool | None = None
    return_log_probs: bool = False
    ignore_eos: bool = False
    guide_type: str | None = None
    guide: str | None = None

    @property
    def greedy(self) -> bool:
        """Greedy exactly when TensorRT-LLM decodes greedily.

        ``top_k == 1`` (any ``top_p``), or ``top_k == 0`` with ``top_p`` unset
        (``<= 0``).  ``top_k > 1`` with ``top_p`` unset samples top-k (p = 1);
        ``top_p`` in (0, 1] samples nucleus, ``top_p == 1`` the whole
        distribution.  ``temperature == 0`` is greedy too (our reading; the
        executor would divide by it).
        """
        if self.temperature == 0.0 or self.top_k == 1:
            return True
        return self.top_k == 0 and self.top_p <= 0.0

    @property
    def effective_top_p(self) -> float:
        """The nucleus threshold the sampler uses: unset means 1.0 (no cut)."""
        return 1.0 if self.top_p <= 0.0 else self.top_p

    @property
    def beam_search(self) -> bool:
        return self.beam_width > 1

    @property
    def sequences(self) -> int:
        """How many sequences the request returns (beams or independent samples)."""
        if self.num_return_sequences is not None:
            return self.num_return_sequences
        return self.beam_width

    def validate(self, max_output_len: int) -> None:
        """Raise :class:`InvalidRequest` naming the ensemble field that is out of range."""
        if not 1 <= self.max_new_tokens <= max_output_len:
            raise InvalidRequest(
                f"max_tokens must be between 1 and {max_output_len} (max_output_len), "
                f"got {self.max_new_tokens}"
            )
        if self.top_k < 0:
            raise InvalidRequest(f"top_k must be >= 0 (0 disables it), got {self.top_k}")
        if not (math.isfinite(self.top_p) and self.top_p <= 1.0):
            raise InvalidRequest(f"top_p must be in (0, 1] (<= 0 means unset), got {self.top_p}")
        temperature = 1.0 if self.temperature is None else self.temperature
        if not (math.isfinite(temperature) and 0.0 <= temperature <= 100.0):
            raise InvalidRequest(f"temperature must be in [0, 100], got {self.temperature}")
        if not (math.isfinite(self.repetition_penalty) and 0.0 < self.repetition_penalty <= 10.0):
            raise InvalidRequest(
                f"repetition_penalty must be in (0, 10], got {self.repetition_penalty}"
            )
        for name in ("presence_penalty", "frequency_penalty"):
            value = getattr(self, name)
            if not (math.isfinite(value) and -2.0 <= value <= 2.0):
                raise InvalidRequest(f"{name} must be in [-2, 2], got {value}")
        if not 0 <= self.min_length <= self.max_new_tokens:
            raise InvalidRequest(
                f"min_tokens (min_length) must be between 0 and max_tokens={self.max_new_tokens}, "
                f"got {self.min_length}"
            )
        if self.end_id is not None and self.end_id < 0:
            raise InvalidRequest(f"end_id must be >= 0, got {self.end_id}")
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise InvalidRequest(f"seed must be in [0, 2^63), got {self.seed}")
        self._validate_sequences()
        self._validate_guide()

    def _validate_sequences(self) -> None:
        if not 1 <= self.beam_width <= MAX_BEAM_WIDTH:
            raise InvalidRequest(
                f"beam_width must be between 1 and {MAX_BEAM_WIDTH}, got {self.beam_width}"
            )
        limit = self.beam_width if self.beam_search else MAX_RETURN_SEQUENCES
        if self.num_return_sequences is not None and not 1 <= self.num_return_sequences <= limit:
            what = "beam_width" if self.beam_search else "the engine's limit"
            raise InvalidRequest(
                f"num_return_sequences must be between 1 and {limit} ({what}), "
                f"got {self.num_return_sequences}"
            )
        if not math.isfinite(self.length_penalty):
            raise InvalidRequest(f"length_penalty must be finite, got {self.length_penalty}")
        if not self.beam_search:
            return
        neutral = {"repetition_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0}
        for name, value in neutral.items():
            if getattr(self, name) != value:
                raise InvalidRequest(
                    f"{name} must stay {value:g} with beam_width > 1 (beam search on the CPU "
                    f"engine takes no penalties), got {getattr(self, name)}"
                )
        if self.guide_type is not None:
            raise InvalidRequest(
                "guided_decoding_guide_type cannot be combined with beam_width > 1"
            )

    def _validate_guide(self) -> None:
        if self.guide_type is None:
            if self.guide:
                raise InvalidRequest("guided_decoding_guide needs guided_decoding_guide_type")
            return
        if self.guide_type not in GUIDE_TYPES:
            raise InvalidRequest(
                f"guided_decoding_guide_type must be one of {', '.join(GUIDE_TYPES)}, "
                f"got {self.guide_type!r}"
            )
        if self.guide_type != "json" and not self.guide:
            raise InvalidRequest(
                f"guided_decoding_guide must hold the {self.guide_type} guide, got nothing"
            )
        if self.guide_type == "json_schema":
            import json

            try:
                json.loads(self.guide or "")
            except ValueError as err:
                raise InvalidRequest(
                    f"guided_decoding_guide is not a valid JSON schema: {err}"
                ) from None
