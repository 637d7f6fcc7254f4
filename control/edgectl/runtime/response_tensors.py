"""Engine emissions -> the engine step's output tensors, and many sequences -> one request.

Shapes follow NVIDIA's ``tensorrt_llm`` model with the batch dimension of one
response (always 1): ``output_ids [1, beams, len]``, ``sequence_length
[1, beams]``, ``cum_log_probs [1, beams]``, ``output_log_probs [1, beams, len]``,
scalars ``[1, 1]``.  Only outputs the caller asked for and enabled with NVIDIA's
``return_*`` flags are built (an ensemble asks for every output it maps).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Mapping

import numpy as np

from edgectl.runtime.emission import Emission

# OpenVINO GenAI exposes no per-request KV block counts: these outputs carry -1.
KV_BLOCKS_UNKNOWN = -1
KV_BLOCK_OUTPUTS = (
    "kv_cache_alloc_new_blocks",
    "kv_cache_reused_blocks",
    "kv_cache_alloc_total_blocks",
)


# Side outputs sent only when the request asks for them with NVIDIA's flag, as NVIDIA's
# backend does: every extra tensor costs time on every streamed response.
GATED_OUTPUTS = {
    "return_log_probs": ("cum_log_probs", "output_log_probs"),
    "return_perf_metrics": (
        "arrival_time_ns",
        "first_scheduled_time_ns",
        "first_token_time_ns",
        "last_token_time_ns",
        "acceptance_rate",
        "total_accepted_draft_tokens",
        "total_draft_tokens",
        *KV_BLOCK_OUTPUTS,
    ),
    "return_num_input_tokens": ("num_input_tokens",),
    "return_num_output_tokens": ("num_output_tokens",),
}
# Declared for NVIDIA's clients but never filled (their inputs are refused).
NEVER_SENT = ("context_logits", "generation_logits", "context_phase_params")


def outputs_to_send(requested: Collection[str], flag_set: Callable[[str], bool]) -> set[str]:
    """The requested outputs a request's flags enable (``flag_set(name)``: that flag is true)."""
    blocked = set(NEVER_SENT)
    for flag, names in GATED_OUTPUTS.items():
        if not flag_set(flag):
            blocked.update(names)
    return set(requested) - blocked


def _padded(rows: list[list], fill: float, dtype) -> np.ndarray:
    width = max((len(row) for row in rows), default=0)
    out = np.full((1, len(rows), width), fill, dtype=dtype)
    for beam, row in enumerate(rows):
        out[0, beam, : len(row)] = row
    return out


def _scalar(value, dtype) -> np.ndarray:
    return np.asarray([[value]], dtype=dtype)


def output_tensors(emission: Emission, requested: Collection[str]) -> dict[str, np.ndarray]:
    """The requested outputs for one emission."""
    timing = emission.timing
    builders: dict[str, Callable[[], np.ndarray]] = {
        "output_ids": lambda: _padded(emission.ids, emission.end_id, np.int32),
        "sequence_length": lambda: np.asarray([[len(ids) for ids in emission.ids]], dtype=np.int32),
        "cum_log_probs": lambda: np.asarray([emission.cum_log_probs], dtype=np.float32),
        "output_log_probs": lambda: _padded(emission.log_probs, 0.0, np.float32),
        "context_logits": lambda: np.zeros((1, 0, 0), dtype=np.float32),
        "generation_logits": lambda: np.zeros((1, 0, 0, 0), dtype=np.float32),
        "batch_index": lambda: _scalar(emission.batch_index, np.int32),
        "sequence_index": lambda: _scalar(emission.sequence_index, np.int32),
        "context_phase_params": lambda: np.zeros((1, 0), dtype=np.uint8),
        "arrival_time_ns": lambda: _scalar(timing.arrival_ns, np.int64),
        "first_scheduled_time_ns": lambda: _scalar(timing.first_scheduled_ns, np.int64),
        "first_token_time_ns": lambda: _scalar(timing.first_token_ns, np.int64),
        "last_token_time_ns": lambda: _scalar(timing.last_token_ns, np.int64),
        "acceptance_rate": lambda: _scalar(0.0, np.float32),
        "total_accepted_draft_tokens": lambda: _scalar(0, np.int32),
        "total_draft_tokens": lambda: _scalar(0, np.int32),
        "num_input_tokens": lambda: _scalar(emission.num_input_tokens, np.int32),
        "num_output_tokens": lambda: _scalar(emission.num_output_tokens, np.int32),
        "finish_reason": lambda: np.asarray(
            [[reason.encode() for reason in emission.finish_reasons]], dtype=object
        ),
        "request_key": lambda: _scalar(emission.key, np.uint64),
    }
    for name in KV_BLOCK_OUTPUTS:
        builders[name] = lambda: _scalar(KV_BLOCKS_UNKNOWN, np.int32)
    return {name: build() for name, build in builders.items() if name in requested}


class FanIn:
    """Several engine sequences answering one client request through one response sender.

    Only the last sequence to finish sends the final flag; after an error the
    remaining sequences are dropped (reported as cancelled so the engine frees them).
    ``extras[batch_index]`` holds tensors of the request row echoed on each of its
    responses (the RAG drop counts), sent when requested.
    """

    def __init__(
        self,
        count: int,
        deliver: Callable[[dict[str, np.ndarray], bool], None],
        deliver_error: Callable[[str, str], None],
        client_cancelled: Callable[[], bool],
        requested: Collection[str],
        extras: Mapping[int, Mapping[str, np.ndarray]] | None = None,
    ) -> None:
        self._open = count
        self._deliver = deliver
        self._deliver_error = deliver_error
        self._client_cancelled = client_cancelled
        self._requested = frozenset(requested)
        self._extras = extras or {}
        self._lock = threading.Lock()
        self._failed = False

    def sink(self) -> _SequenceSink:
        return _SequenceSink(self)

    def _send(self, emission: Emission) -> None:
        tensors = output_tensors(emission, self._requested)
        for name, value in self._extras.get(emission.batch_index, {}).items():
            if name in self._requested:
                tensors[name] = value
        with self._lock:
            if self._failed:
                return
            if emission.final:
                self._open -= 1
            self._deliver(tensors, emission.final and self._open == 0)

    def _fail(self, message: str, kind: str) -> None:
        with self._lock:
            if self._failed:
                return
            self._failed = True
            self._deliver_error(message, kind)

    def _cancelled(self) -> bool:
        return self._failed or self._client_cancelled()


class _SequenceSink:
    """The engine's ResponseSink for one sequence of a FanIn."""

    def __init__(self, fan_in: FanIn) -> None:
        self._fan_in = fan_in

    def send(self, emission: Emission) -> None:
        self._fan_in._send(emission)

    def fail(self, message: str, kind: str = "invalid_argument") -> None:
        self._fan_in._fail(message, kind)

    def cancelled(self) -> bool:
        return self._fan_in._cancelled()
