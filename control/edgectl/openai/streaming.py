"""Events -> responses: the collected body, or the SSE byte stream, with latency metrics.

The first event is awaited before any byte is sent (see :func:`primed`), so a refusal
(bad field, full engine queue) still becomes a proper status code instead of an
error inside a 200 stream.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from openai.types.chat.chat_completion_chunk import ChoiceDelta
from pydantic import BaseModel

from edgectl.openai.errors import ApiError
from edgectl.openai.generation import Event, Generation
from edgectl.openai.metrics import GatewayMetrics
from edgectl.openai.responses import DONE_LINE, Assembler, sse


def dump(model: BaseModel) -> str:
    """Only the fields a response sets, nulls included where they are set to None."""
    return model.model_dump_json(exclude_unset=True, warnings=False)


class Timed:
    """The generation's events, with TTFT, inter-token latency, in-flight and token counts."""

    def __init__(self, generation: Generation, metrics: GatewayMetrics, arrived: float) -> None:
        self.generation = generation
        self.metrics = metrics
        self.arrived = arrived
        self._last: dict[int, float] = {}
        self._events = generation.events()
        self._first: Event | None = None

    async def primed(self) -> Timed:
        """Wait for the first event (errors surface here, before any byte is sent)."""
        self.metrics.in_flight.inc()
        try:
            self._first = await anext(self._events, None)
        except BaseException:
            self.metrics.in_flight.dec()
            await self._events.aclose()
            raise
        return self

    async def __aiter__(self) -> AsyncIterator[Event]:
        try:
            if self._first is not None:
                self._observe(self._first)
                yield self._first
                async for event in self._events:
                    self._observe(event)
                    yield event
            usage = self.generation.usage()
            if usage.known:
                self.metrics.prompt_tokens.inc(usage.prompt_tokens or 0)
                self.metrics.completion_tokens.inc(usage.completion_tokens or 0)
        finally:
            self.metrics.in_flight.dec()
            await self._events.aclose()  # a client that left: cancels the Triton calls

    def _observe(self, event: Event) -> None:
        if not event.text:
            return
        now = time.perf_counter()
        if not self._last:
            self.metrics.ttft.observe(now - self.arrived)
        elif event.choice in self._last:
            self.metrics.itl.observe(now - self._last[event.choice])
        self._last[event.choice] = now


async def collect(timed: Timed, assembler: Assembler) -> None:
    async for event in timed:
        assembler.add(event)


async def chat_sse(
    timed: Timed, assembler: Assembler, choices: int, include_usage: bool
) -> AsyncIterator[bytes]:
    """role chunk per choice, content chunks, a finish chunk per choice, usage, [DONE]."""

    def chunk(choice: int, delta: ChoiceDelta, event: Event | None = None) -> bytes:
        return sse(dump(_with_usage(assembler.chat_chunk(choice, delta, event), include_usage)))

    started = False
    async for event in timed:
        if not started:
            started = True
            for index in range(choices):
                yield chunk(index, ChoiceDelta(role="assistant", content=""))
        finish = event.finish_reason
        if event.text or event.log_probs:
            event.finish_reason = None
            yield chunk(event.choice, ChoiceDelta(content=event.text), event)
        if finish:
            done = Event(event.choice, "", finish)
            yield chunk(event.choice, ChoiceDelta(), done)
    if include_usage:
        yield sse(dump(assembler.chat_usage_chunk(timed.generation.usage())))
    yield DONE_LINE


async def completion_sse(
    timed: Timed, assembler: Assembler, echo: Callable[[int], str], include_usage: bool
) -> AsyncIterator[bytes]:
    """Text chunks (the prompt first when echoing), a finish chunk per choice, usage, [DONE]."""
    echoed: set[int] = set()
    async for event in timed:
        prefix = "" if event.choice in echoed else echo(event.choice)
        echoed.add(event.choice)
        finish = event.finish_reason
        if event.text or event.log_probs or prefix:
            event.finish_reason = None
            body = assembler.completion_chunk(event, prefix)
            yield sse(dump(_with_usage(body, include_usage)))
        if finish:
            body = assembler.completion_chunk(Event(event.choice, "", finish))
            yield sse(dump(_with_usage(body, include_usage)))
    if include_usage:
        yield sse(dump(assembler.completion_usage_chunk(timed.generation.usage())))
    yield DONE_LINE


async def reporting_errors(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """A failure after the 200 was sent becomes an ``error`` event (as OpenAI streams do)."""
    try:
        async for chunk in chunks:
            yield chunk
    except ApiError as err:
        yield sse(json.dumps(err.body()))


def _with_usage(body: Any, include_usage: bool) -> Any:
    """With include_usage every chunk but the last carries ``"usage": null``."""
    if include_usage:
        body.usage = None
    return body
