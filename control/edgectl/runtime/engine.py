"""The CPU engine step: OpenVINO GenAI's continuous-batching scheduler behind the contract.

One thread owns the pipeline.  ``submit`` only enqueues, so Triton's ``execute``
returns at once and a request that arrives mid-generation joins the running
batch at the next ``step()`` (in-flight batching).  The thread adds requests,
steps the pipeline, drains every handle, applies stop words and the streaming
holdback, and hands ids to each request's :class:`ResponseSink`.
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from edgectl.runtime.cancel_board import CancelBoard
from edgectl.runtime.contract import InvalidRequest, SamplingParams
from edgectl.runtime.detokenize import AnchoredDecoder, StreamHoldback
from edgectl.runtime.emission import Emission, RequestTiming, finished_beams
from edgectl.runtime.generation_config import configure
from edgectl.runtime.speculative import Speculation

log = logging.getLogger(__name__)


# Why a request failed; the Triton adapter maps each to an error code.
INVALID = "invalid_argument"  # the request itself is wrong (HTTP 400)
UNAVAILABLE = "unavailable"  # overload or shutdown: retry later (HTTP 503)
CANCELLED = "cancelled"  # the client went away
INTERNAL = "internal"  # our fault


class ResponseSink(Protocol):
    """Where one request's output goes (Triton's response sender in production).

    ``emission.key`` identifies the request to later steps (see cancel_board).
    """

    def send(self, emission: Emission) -> None: ...

    def fail(self, message: str, kind: str = INVALID) -> None: ...

    def cancelled(self) -> bool: ...


def _shared_keys(sink: ResponseSink) -> set[int]:
    """Cancellation keys of a sink shared by several clients (runtime.coalesce)."""
    keys = getattr(sink, "cancel_keys", None)
    return keys() if keys is not None else set()


class DeviceGate(Protocol):
    """Shares the device with other engines (edgectl.runtime.slots.SlotGate)."""

    def acquire(self, stopping: Callable[[], bool]) -> bool: ...

    def idle(self) -> None: ...


@dataclass
class EngineRequest:
    """One engine sequence (a row of a batch, or one of ``num_return_sequences``)."""

    prompt_ids: list[int]
    params: SamplingParams
    sink: ResponseSink
    batch_index: int = 0
    sequence_index: int = 0
    request_id: str = ""  # the client's id: a later ``stop`` request names it
    timing: RequestTiming = field(default_factory=RequestTiming)
    # False when the responses carry facts of this request alone (its timings), so it
    # may not share another request's sequence or cached answer (runtime.coalesce)
    shareable: bool = True


@dataclass
class EngineLimits:
    """Limits the engine enforces whatever the caller checked before."""

    max_input_len: int
    max_output_len: int
    max_num_seqs: int = 32  # sequences in the running batch
    max_queue_size: int = 64  # requests waiting for a slot; more are refused at once
    queue_timeout_s: float = 30.0  # a request waiting longer is refused
    max_request_seconds: float = 600.0
    cancel_check_steps: int = 4
    vocab_size: int | None = None  # ids outside [0, vocab_size) are refused


@dataclass
class EngineStats:
    """Counters that prove batching from the engine's own view, not from timing."""

    steps: int = 0
    scheduled_sequences: int = 0  # sum over steps of sequences scheduled in that step
    peak_scheduled: int = 0
    requests_added: int = 0
    requests_finished: int = 0
    requests_cancelled: int = 0
    requests_failed: int = 0
    requests_rejected: int = 0  # refused for overload (queue full or queue timeout)
    active: int = 0
    waiting: int = 0
    kv_cache_usage: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


@dataclass
class _Active:
    request: EngineRequest
    handle: Any
    key: int
    holdback: StreamHoldback
    end_id: int
    deadline: float
    generated: list[int] = field(default_factory=list)
    log_probs: list[float] = field(default_factory=list)
    beams: dict[int, Any] = field(default_factory=dict)  # beam search: outputs at the end
    finish_reason: str = ""
    sent: int = 0
    done: bool = False


class ContinuousBatchingEngine:
    """Drives an OpenVINO GenAI ``ContinuousBatchingPipeline`` from one thread."""

    def __init__(
        self,
        pipeline: Any,
        decoder: AnchoredDecoder,
        limits: EngineLimits,
        default_end_id: int,
        generation_config_factory: Callable[[], Any],
        tensor_factory: Callable[[list[int]], Any],
        stats_hook: Callable[[EngineStats], None] | None = None,
        cancel_board: CancelBoard | None = None,
        clock: Callable[[], float] = time.monotonic,
        device_gate: DeviceGate | None = None,
        structured_output_factory: Callable[..., Any] | None = None,
        stop_criteria: Mapping[str, Any] | None = None,
        clock_ns: Callable[[], int] = time.monotonic_ns,
        speculation: Speculation | None = None,
    ) -> None:
        self._pipe = pipeline
        self.speculation = speculation
        self._decoder = decoder
        self._limits = limits
        self._default_end_id = default_end_id
        self._new_config = generation_config_factory
        self._to_tensor = tensor_factory
        self._stats_hook = stats_hook
        self._cancel_board = cancel_board
        self._clock = clock
        self._gate = device_gate
        self._structured_output = structured_output_factory
        self._stop_criteria = stop_criteria
        self._clock_ns = clock_ns
        self._stop_lock = threading.Lock()
        self._stop_ids: set[str] = set()
        self._incoming: queue.Queue[EngineRequest] = queue.Queue()
        self._waiting: deque[tuple[float, EngineRequest]] = deque()
        self._backlog_lock = threading.Lock()
        self._backlog = 0  # submitted, not yet in the running batch (incoming + waiting)
        self._rejected_at_submit = 0
        self._active: list[_Active] = []
        self._next_id = 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edgectl-engine", daemon=True)
        self._last_hook = 0.0
        self._last_published: dict[str, float] = {}
        self.stats = EngineStats()

    # -- public API (any thread) -------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def submit(self, request: EngineRequest) -> None:
        """Queue a request; it joins the running batch at the next step with a free slot.

        A full queue refuses at once (UNAVAILABLE), so overload turns into fast,
        explicit rejections instead of unbounded waiting.
        """
        request.timing.arrival_ns = self._clock_ns()
        if self._stopping.is_set():
            request.sink.fail("the engine is shutting down", UNAVAILABLE)
            return
        limit = self._limits.max_queue_size
        with self._backlog_lock:
            full = self._backlog >= limit
            if full:
                self._rejected_at_submit += 1
            else:
                self._backlog += 1
        if full:
            request.sink.fail(
                f"engine queue is full (max_queue_size={limit} requests waiting); retry later",
                UNAVAILABLE,
            )
            return
        self._incoming.put(request)
        if self._stopping.is_set() and not self._thread.is_alive():
            self._drain_incoming("the engine is shutting down")  # raced with shutdown

    def stop_request(self, request_id: str) -> None:
        """End the running sequences of ``request_id`` (TensorRT-LLM's ``stop`` input).

        They finish at the next step with what they generated so far, which
        frees their slots and KV blocks.
        """
        with self._stop_lock:
            self._stop_ids.add(request_id)

    def shutdown(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self._thread.join(timeout)

    # -- stepping thread -----------------------------------------------------------
    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._admit(block=not self._active and not self._waiting)
                if not self._active:
                    if self._gate is not None:
                        self._gate.idle()  # lend our time slots to the other models
                elif self._gate is None or self._gate.acquire(self._stopping.is_set):
                    self._step()
            except Exception:  # keep serving: one bad step must not kill the thread
                log.exception("engine step failed; failing the requests in flight")
                self._fail_all("internal engine error (see server log)", INTERNAL)
        if self._gate is not None:
            self._gate.idle()
        self._fail_all("the engine is shutting down", UNAVAILABLE)
        while self._waiting:
            self._refuse(self._pop_waiting(), "the engine is shutting down", UNAVAILABLE)
        self._drain_incoming("the engine is shutting down")

    def _admit(self, block: bool) -> None:
        """Move submitted requests to the waiting line, expire old ones, fill free slots."""
        try:
            first = self._incoming.get(timeout=0.2) if block else self._incoming.get_nowait()
        except queue.Empty:
            first = None
        now = self._clock()
        while first is not None:
            self._waiting.append((now, first))
            try:
                first = self._incoming.get_nowait()
            except queue.Empty:
                first = None
        timeout = self._limits.queue_timeout_s
        while self._waiting and now - self._waiting[0][0] > timeout:
            self.stats.requests_rejected += 1
            self._refuse(
                self._pop_waiting(),
                f"waited longer than queue_timeout_s={timeout:g} for a free engine slot; "
                "retry later",
                UNAVAILABLE,
                count_failed=False,
            )
        while self._waiting and len(self._active) < self._limits.max_num_seqs:
            self._add(self._pop_waiting())
        self.stats.waiting = len(self._waiting)
        self.stats.active = len(self._active)
        if not self._active:
            self._publish_stats(force=block)

    def _pop_waiting(self) -> EngineRequest:
        with self._backlog_lock:
            self._backlog -= 1
        return self._waiting.popleft()[1]

    def _add(self, request: EngineRequest) -> None:
        try:
            config, end_id = self._generation_config(request)
            handle = self._pipe.add_request(
                self._next_id, self._to_tensor(request.prompt_ids), config
            )
        except InvalidRequest as err:
            self._refuse(request, str(err))
            return
        except Exception:  # the pipeline refused it (allocation, ...): fail this one only
            log.exception("could not add a request to the pipeline")
            self._refuse(request, "internal engine error while admitting the request", INTERNAL)
            return
        self._next_id += 1
        self.stats.requests_added += 1
        request.timing.first_scheduled_ns = self._clock_ns()
        self._active.append(
            _Active(
                request=request,
                handle=handle,
                key=secrets.randbits(63),
                holdback=StreamHoldback(self._decoder, request.params.stop_words),
                end_id=end_id,
                deadline=self._clock() + self._limits.max_request_seconds,
            )
        )

    def _refuse(
        self, request: EngineRequest, message: str, kind: str = INVALID, count_failed: bool = True
    ) -> None:
        if count_failed:
            self.stats.requests_failed += 1
        try:
            request.sink.fail(message, kind)
        except Exception:  # the client may be gone already
            log.debug("could not deliver %r", message, exc_info=True)

    def _generation_config(self, request: EngineRequest) -> tuple[Any, int]:
        params = request.params
        if not request.prompt_ids:
            raise InvalidRequest("input_ids must hold at least one token")
        if len(request.prompt_ids) > self._limits.max_input_len:
            raise InvalidRequest(
                f"input is {len(request.prompt_ids)} tokens; the limit is "
                f"max_input_len={self._limits.max_input_len}"
            )
        vocab = self._limits.vocab_size
        if vocab is not None and not all(0 <= i < vocab for i in request.prompt_ids):
            bad = next(i for i in request.prompt_ids if not 0 <= i < vocab)
            raise InvalidRequest(f"input_ids must be in [0, {vocab}) (vocab_size), got {bad}")
        params.validate(self._limits.max_output_len)
        end_id = self._default_end_id if params.end_id is None else params.end_id
        config = configure(
            self._new_config(),
            params,
            end_id,
            seed_offset=request.sequence_index,
            structured_output_factory=self._structured_output,
            stop_criteria=self._stop_criteria,
        )
        if self.speculation is not None:
            self.speculation.configure(config)
        return config, end_id

    def _step(self) -> None:
        self._pipe.step()
        stats = self.stats
        stats.steps += 1
        metrics = self._pipe.get_metrics()
        scheduled = int(getattr(metrics, "scheduled_requests", len(self._active)))
        stats.scheduled_sequences += scheduled
        stats.peak_scheduled = max(stats.peak_scheduled, scheduled)
        stats.kv_cache_usage = float(getattr(metrics, "cache_usage", 0.0))
        check_cancel = stats.steps % self._limits.cancel_check_steps == 0
        posted = self._posted_cancellations() if check_cancel else set()
        self._apply_stop_requests()
        now = self._clock()
        for item in self._active:
            if item.request.params.beam_search:
                self._drain_beams(item)
            else:
                self._drain(item)
            if posted and hasattr(item.request.sink, "forget"):
                item.request.sink.forget(posted)  # those clients of a shared sequence left
            if not item.done:
                self._enforce_lifetime(item, now, check_cancel, item.key in posted)
        self._active = [item for item in self._active if not item.done]
        stats.active = len(self._active)
        self._publish_stats()

    def _apply_stop_requests(self) -> None:
        with self._stop_lock:
            stop_ids, self._stop_ids = self._stop_ids, set()
        for item in self._active:
            if item.request.request_id and item.request.request_id in stop_ids:
                item.handle.stop()
                item.finish_reason = item.finish_reason or "stop"

    def _drain(self, item: _Active) -> None:
        handle = item.handle
        finished = False
        while handle.can_read() and not finished:
            for output in handle.read().values():
                if self.speculation is not None:
                    self.speculation.record(
                        len(item.generated),
                        len(output.generated_ids),
                        item.request.params.max_new_tokens,
                    )
                log_probs = list(getattr(output, "generated_log_probs", None) or [])
                for index, token in enumerate(output.generated_ids):
                    log_prob = float(log_probs[index]) if index < len(log_probs) else 0.0
                    finished = self._append(item, int(token), log_prob)
                    if finished:
                        break
        if not finished and str(handle.get_status()).split(".")[-1] != "RUNNING":
            finished = True
            item.finish_reason = item.finish_reason or "stop"
        self._emit(item, final=finished)

    def _drain_beams(self, item: _Active) -> None:
        """Beam search: OpenVINO GenAI delivers the beams once, when they are complete."""
        handle = item.handle
        while handle.can_read():
            item.beams.update(handle.read())
        if item.beams and item.request.timing.first_token_ns == 0:
            item.request.timing.first_token_ns = self._clock_ns()
        if str(handle.get_status()).split(".")[-1] == "RUNNING":
            return
        item.request.timing.last_token_ns = self._clock_ns()
        self._emit(item, final=True)

    def _append(self, item: _Active, token: int, log_prob: float = 0.0) -> bool:
        """Add one token; True when the request is complete (end id or stop word)."""
        timing = item.request.timing
        timing.last_token_ns = self._clock_ns()
        if timing.first_token_ns == 0:
            timing.first_token_ns = timing.last_token_ns
        if token == item.end_id and not item.request.params.ignore_eos:
            item.finish_reason = "stop"
            return True
        item.generated.append(token)
        item.log_probs.append(log_prob)
        matched = item.holdback.stop_match(item.generated)
        if matched:
            del item.generated[-matched:]
            del item.log_probs[-matched:]
            item.handle.stop()
            item.finish_reason = "stop"
            return True
        if len(item.generated) >= item.request.params.max_new_tokens:
            item.finish_reason = "length"
            return True
        return False

    def _emission(self, item: _Active, ids: list[int], log_probs: list[float], final: bool):
        request = item.request
        return Emission(
            ids=[ids],
            log_probs=[log_probs],
            cum_log_probs=[sum(item.log_probs[: item.sent + len(log_probs)])],
            final=final,
            finish_reasons=[item.finish_reason if final else ""],
            num_input_tokens=len(request.prompt_ids),
            num_output_tokens=item.sent + len(log_probs),
            timing=request.timing,
            batch_index=request.batch_index,
            sequence_index=request.sequence_index,
            key=item.key,
            end_id=item.end_id,
        )

    def _emit(self, item: _Active, final: bool) -> None:
        params = item.request.params
        try:
            if params.beam_search:
                item.request.sink.send(self._beam_emission(item))
            elif params.streaming:
                pending = item.generated[item.sent :]
                count = item.holdback.releasable(pending, final)
                if count or final:
                    chunk_log_probs = item.log_probs[item.sent : item.sent + count]
                    emission = self._emission(item, pending[:count], chunk_log_probs, final)
                    item.request.sink.send(emission)
                    item.sent += count
            elif final:
                prefix = [] if params.exclude_input_in_output else list(item.request.prompt_ids)
                emission = self._emission(item, item.generated, item.log_probs, True)
                emission.ids = [prefix + item.generated]
                item.request.sink.send(emission)
        except Exception:  # this client's sender broke: drop it, keep the others running
            log.warning("could not send a response; cancelling that request", exc_info=True)
            item.handle.cancel()
            item.done = True
            self.stats.requests_failed += 1
            return
        if final:
            item.done = True
            self.stats.requests_finished += 1

    def _beam_emission(self, item: _Active) -> Emission:
        request = item.request
        params = request.params
        beams = finished_beams(
            list(item.beams.values()), params.sequences, item.end_id, item.holdback.stop_match
        )
        prefix = (
            [] if params.exclude_input_in_output or params.streaming else list(request.prompt_ids)
        )
        return Emission(
            ids=[prefix + beam.ids for beam in beams],
            log_probs=[beam.log_probs for beam in beams],
            cum_log_probs=[sum(beam.log_probs) for beam in beams],
            final=True,
            finish_reasons=[beam.finish_reason for beam in beams],
            num_input_tokens=len(request.prompt_ids),
            num_output_tokens=max((len(beam.ids) for beam in beams), default=0),
            timing=request.timing,
            batch_index=request.batch_index,
            sequence_index=request.sequence_index,
            key=item.key,
            end_id=item.end_id,
        )

    def _posted_cancellations(self) -> set[int]:
        if self._cancel_board is None:
            return set()
        keys = {item.key for item in self._active}
        for item in self._active:
            keys |= _shared_keys(item.request.sink)
        return self._cancel_board.take(keys)

    def _enforce_lifetime(
        self, item: _Active, now: float, check_cancel: bool, posted: bool
    ) -> None:
        if now > item.deadline:
            self._abort(
                item,
                f"request exceeded max_request_seconds={self._limits.max_request_seconds:g}",
                UNAVAILABLE,
            )
            self.stats.requests_failed += 1
        elif posted or (check_cancel and item.request.sink.cancelled()):
            self._abort(item, "request cancelled by the client", CANCELLED)
            self.stats.requests_cancelled += 1

    def _abort(self, item: _Active, message: str, kind: str) -> None:
        item.handle.cancel()
        item.done = True
        try:
            item.request.sink.fail(message, kind)
        except Exception:  # the client may be gone already
            log.debug("could not deliver %r", message, exc_info=True)

    def _fail_all(self, message: str, kind: str) -> None:
        for item in self._active:
            self._abort(item, message, kind)
            self.stats.requests_failed += 1
        self._active = []
        self.stats.active = 0

    def _drain_incoming(self, message: str) -> None:
        while True:
            try:
                request = self._incoming.get_nowait()
            except queue.Empty:
                return
            with self._backlog_lock:
                self._backlog -= 1
            request.sink.fail(message, UNAVAILABLE)

    def _publish_stats(self, force: bool = False) -> None:
        with self._backlog_lock:  # submit() counts its refusals under the lock
            self.stats.requests_rejected += self._rejected_at_submit
            self._rejected_at_submit = 0
        if self._stats_hook is None:
            return
        now = self._clock()
        if not force and now - self._last_hook < 0.25:
            return
        snapshot = self.stats.as_dict()
        if snapshot != self._last_published:
            self._last_hook = now
            self._last_published = snapshot
            self._stats_hook(self.stats)
