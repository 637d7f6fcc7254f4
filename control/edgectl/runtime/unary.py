"""Unary (non-decoupled) serving in front of the decoupled CPU engine.

A non-decoupled Python model answers each request with exactly one response.  The
front (``model_repository/unary_front``) forwards each request to the one
decoupled engine step, collects that stream and answers with one response through
the request's response sender, so ``execute`` returns at once and a request that
arrives while others run joins the engine's batch instead of waiting for them.
These helpers decide what a unary request may ask for, merge a stream into one
response and send it from a worker thread.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from typing import Any

import numpy as np

from edgectl.runtime.contract import InvalidRequest

# Outputs with a beam axis (axis 1): sequences of one request are stacked along it.
PER_SEQUENCE = (
    "output_ids",
    "sequence_length",
    "cum_log_probs",
    "output_log_probs",
    "finish_reason",
)
Lookup = Callable[[str], "np.ndarray | None"]


def check_unary_request(lookup: Lookup) -> None:
    """Refuse what needs a stream of responses, as NVIDIA's non-decoupled backend does."""
    streaming = lookup("streaming")
    if streaming is not None and bool(np.asarray(streaming).reshape(-1).any()):
        raise InvalidRequest(
            "streaming needs the decoupled deployment (engine.decoupled=true); this one is unary"
        )
    ids = lookup("input_ids")
    if ids is not None and np.asarray(ids).ndim > 1 and np.asarray(ids).shape[0] > 1:
        raise InvalidRequest(
            f"a unary deployment takes one request per call (batch size 1), "
            f"got {np.asarray(ids).shape[0]}"
        )


def _pad_last(array: np.ndarray, width: int, fill) -> np.ndarray:
    if array.shape[-1] == width:
        return array
    pad = [(0, 0)] * (array.ndim - 1) + [(0, width - array.shape[-1])]
    return np.pad(array, pad, constant_values=fill)


def merge_sequences(responses: Sequence[dict[str, np.ndarray]], end_id: int) -> dict:
    """One response from the final responses of a request's sequences (by sequence_index).

    Per-sequence outputs are stacked along the beam axis in sequence order;
    everything else comes from the last response.
    """
    if not responses:
        raise ValueError("no responses to merge")
    ordered = sorted(
        responses, key=lambda r: int(np.asarray(r.get("sequence_index", [[0]])).reshape(-1)[0])
    )
    merged = dict(ordered[-1])
    for name in PER_SEQUENCE:
        arrays = [r[name] for r in ordered if name in r]
        if len(arrays) != len(ordered):
            continue
        if arrays[0].ndim == 3:
            width = max(a.shape[-1] for a in arrays)
            fill = end_id if name == "output_ids" else (0.0 if arrays[0].dtype.kind == "f" else 0)
            arrays = [_pad_last(a, width, fill) for a in arrays]
        merged[name] = np.concatenate(arrays, axis=1)
    if "num_output_tokens" in merged:
        counts = [int(np.asarray(r["num_output_tokens"]).reshape(-1)[0]) for r in ordered]
        merged["num_output_tokens"] = np.asarray([[max(counts)]], dtype=np.int32)
    return merged


def answer_later(
    pool: Executor,
    sender: Any,
    work: Callable[[], Any],
    final_flag: int,
    on_error: Callable[[str], Any],
) -> Future:
    """Run ``work`` on ``pool``; send its response, the request's only one, as final.

    An exception in ``work`` becomes an error response, so no request is left unanswered.
    """

    def run() -> None:
        try:
            response = work()
        except Exception as err:  # noqa: BLE001 - answered to the client below
            response = on_error(f"the unary front failed: {err}")
        sender.send(response, flags=final_flag)

    return pool.submit(run)
