"""The locust side of ``edgectl loadtest``: a user that times streamed generations.

Imported only by the locustfiles in ``loadtest/`` (importing locust monkey-patches
the process for gevent, which edgectl's own process must never be).  Each request is
timed here (send -> first response -> every later response -> final), written as one
line of records.jsonl, and reported to locust with ``events.request`` so locust's own
JSON output counts it too.  Subclasses only say how to send one request and iterate
its text pieces.

Per step: the first ``warmup_requests`` requests run first and are marked warm-up
(reported under "<model> (warm-up)"); measured requests start together once they are
done and are sent for ``duration_s``; no request starts after ``max_requests`` or after
that time (then the run quits, letting in-flight requests finish within locust's
--stop-timeout).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import IO, Any

import gevent
import httpx
from gevent.event import Event
from locust import User, constant, events, task
from locust.env import Environment
from locust.exception import StopUser

from edgectl.client import GenerateRequest
from edgectl.loadtest.metrics import RequestRecord
from edgectl.loadtest.profile import StepSpec


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    parser.add_argument(
        "--edgectl-spec", default="", help="JSON step spec written by `edgectl loadtest`"
    )


class _Run:
    """State shared by the users of one locust process: slots, warm-up gate, records."""

    def __init__(self, spec: StepSpec, environment: Environment) -> None:
        self.spec = spec
        self.environment = environment
        self.claimed = 0
        self.warmup_left = spec.warmup_requests
        self.gate = Event()
        self.gate_time = 0.0
        self.quitting = False
        self.stopping = False  # the run is ending: send nothing new
        self.users = 0
        self._records: IO[str] = open(spec.records_path, "a", encoding="utf-8")  # noqa: SIM115
        if self.warmup_left == 0:
            self._open_gate()

    def _open_gate(self) -> None:
        self.gate_time = time.time()
        self.gate.set()
        gevent.spawn_later(self.spec.duration_s, self.quit)

    def claim(self) -> int | None:
        """The next request slot, or None once the hard cap is reached or the run ends."""
        if self.stopping or self.claimed >= self.spec.max_requests:
            return None
        self.claimed += 1
        return self.claimed - 1

    def is_warmup(self, slot: int) -> bool:
        return slot < self.spec.warmup_requests

    def wait_turn(self, slot: int) -> bool:
        """Measured requests wait for the warm-up; in request-rate mode, for their send time.

        False when the run ended meanwhile: the request is not sent.
        """
        if self.is_warmup(slot):
            return not self.stopping
        self.gate.wait()
        if self.spec.request_rate:
            due = self.gate_time + (slot - self.spec.warmup_requests) / self.spec.request_rate
            gevent.sleep(max(0.0, due - time.time()))
        return not self.stopping

    def done(self, record: RequestRecord) -> None:
        self._records.write(json.dumps(record.to_json()) + "\n")
        self._records.flush()
        if record.warmup:
            self.warmup_left -= 1
            if self.warmup_left == 0:
                self._open_gate()

    def quit(self) -> None:
        """End the run once: nothing new is sent; in-flight requests finish (--stop-timeout)."""
        self.stopping = True
        if not self.quitting and self.environment.runner is not None:
            self.quitting = True
            gevent.spawn(self.environment.runner.quit)


@events.test_stopping.add_listener
def _stopping(environment: Environment, **_kwargs: Any) -> None:
    state = getattr(environment, "edgectl_run", None)
    if state is not None:
        state.stopping = True


def _run_state(environment: Environment) -> _Run:
    state = getattr(environment, "edgectl_run", None)
    if state is None:
        path = environment.parsed_options.edgectl_spec if environment.parsed_options else ""
        if not path:
            raise RuntimeError("run this locustfile through `edgectl loadtest` (--edgectl-spec)")
        state = _Run(StepSpec.load(path), environment)
        environment.edgectl_run = state  # type: ignore[attr-defined]
    return state


class LlmUser(User):
    """Closed-loop user: one request in flight at a time, back to back."""

    abstract = True
    wait_time = constant(0)
    request_type = "llm"

    def on_start(self) -> None:
        self.run = _run_state(self.environment)
        self.spec = self.run.spec
        self.run.users += 1
        self.user_id = self.run.users

    def stream(self, inputs: dict[str, Any]) -> Iterator[str]:
        """Send one request; yield the text of each response that carries output."""
        raise NotImplementedError

    @task
    def generate(self) -> None:
        slot = self.run.claim()
        if slot is None:
            self.run.quit()
            raise StopUser()
        if not self.run.wait_turn(slot):
            raise StopUser()
        record = self._timed(slot)
        self.run.done(record)
        name = f"{self.spec.model} (warm-up)" if record.warmup else self.spec.model
        self.environment.events.request.fire(
            request_type=self.request_type,
            name=name,
            response_time=record.latency_s * 1000,
            response_length=len(record.output_text),
            exception=None if record.ok else RuntimeError(record.error),
            context={"ttft_ms": (record.ttft_s or 0) * 1000},
        )

    def _timed(self, slot: int) -> RequestRecord:
        spec = self.spec
        prompt = spec.prompts[slot % len(spec.prompts)]
        inputs = GenerateRequest(
            text_input=prompt["text"], max_tokens=spec.max_tokens, stream=spec.stream,
            end_id=spec.end_id, apply_chat_template=spec.apply_chat_template,
        ).inputs()  # fmt: skip
        record = RequestRecord(
            step=spec.step, start=time.time(), ok=False, latency_s=0.0,
            input_tokens=int(prompt["tokens"]), max_tokens=spec.max_tokens,
            warmup=self.run.is_warmup(slot), user=self.user_id,
        )  # fmt: skip
        pieces: list[str] = []
        sent = last = time.perf_counter()
        try:
            for piece in self.stream(inputs):
                now = time.perf_counter()
                if not pieces:
                    record.ttft_s = now - sent if spec.stream else None
                else:
                    record.itl_s.append(now - last)
                pieces.append(piece)
                last = now
                if now - sent > spec.request_timeout_s:
                    raise TimeoutError(f"request exceeded {spec.request_timeout_s:g}s")
            record.ok = bool(pieces)
            record.error = None if pieces else "no response carried output"
        except Exception as err:  # a failed request is data, never a crash of the run
            record.error = f"{type(err).__name__}: {err}"
        record.latency_s = time.perf_counter() - sent
        record.output_text = "".join(pieces)
        record.responses = len(pieces)
        return record


class HttpLlmUser(LlmUser):
    """An LlmUser with one keep-alive HTTP connection pool to ``spec.url``."""

    abstract = True

    def on_start(self) -> None:
        super().on_start()
        self._http = httpx.Client(base_url=self.spec.url, timeout=self.spec.request_timeout_s)

    def on_stop(self) -> None:
        self._http.close()
