"""Runs a Plan against Triton and merges its responses into per-choice events.

Each ensemble request runs as its own task feeding one queue, so ``n`` choices made
by ``n`` requests stream side by side.  Closing the event stream (the HTTP client went
away) cancels every task, which cancels its gRPC call.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from edgectl.openai.ensemble import Capabilities, Piece
from edgectl.openai.translate import Plan
from edgectl.openai.triton import Triton

_DONE = object()


@dataclass
class Event:
    """New text for one choice; ``finish_reason`` set on that choice's last event."""

    choice: int
    text: str
    finish_reason: str | None = None
    log_probs: list[float] = field(default_factory=list)


@dataclass
class Usage:
    prompt_tokens: int | None = None
    completion_tokens: int | None = None

    @property
    def known(self) -> bool:
        return self.prompt_tokens is not None and self.completion_tokens is not None


class Generation:
    """One OpenAI request's worth of ensemble requests; iterate ``events()`` once."""

    def __init__(self, triton: Triton, caps: Capabilities, plan: Plan, prompts: int = 1) -> None:
        self.triton = triton
        self.caps = caps
        self.plan = plan
        self.requests_per_prompt = len(plan.requests) // prompts
        self._input_tokens: dict[int, int] = {}  # prompt -> tokens
        self._output_tokens: dict[int, int] = {}  # choice -> tokens
        self._finished: set[int] = set()

    @property
    def choices(self) -> int:
        return len(self.plan.requests) * self.plan.choices_per_request

    async def events(self) -> AsyncIterator[Event]:
        queue: asyncio.Queue = asyncio.Queue()
        tasks = [
            asyncio.create_task(self._pump(number, inputs, queue))
            for number, inputs in enumerate(self.plan.requests)
        ]
        running = len(tasks)
        try:
            while running:
                item = await queue.get()
                if item is _DONE:
                    running -= 1
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield item
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task

    async def _pump(self, number: int, inputs: dict, queue: asyncio.Queue) -> None:
        try:
            async for piece in self.triton.generate(self.caps, inputs):
                for event in self._events(number, piece):
                    await queue.put(event)
            await queue.put(_DONE)
        except asyncio.CancelledError:
            raise
        except BaseException as err:  # handed to the reader, which raises it
            await queue.put(err)

    def _events(self, number: int, piece: Piece) -> list[Event]:
        choice = number * self.plan.choices_per_request + piece.index
        prompt = number // max(1, self.requests_per_prompt)
        if piece.input_tokens is not None:
            self._input_tokens[prompt] = piece.input_tokens
        if piece.output_tokens is not None:
            self._output_tokens[choice] = piece.output_tokens
        events = []
        if piece.text or piece.log_probs or piece.finish_reason:
            events.append(Event(choice, piece.text, piece.finish_reason, piece.log_probs))
            if piece.finish_reason:
                self._finished.add(choice)
        if piece.final:  # choices the ensemble did not give a finish_reason
            per = self.plan.choices_per_request
            for open_choice in range(number * per, (number + 1) * per):
                if open_choice not in self._finished:
                    self._finished.add(open_choice)
                    events.append(Event(open_choice, "", self._fallback_reason(open_choice)))
        return events

    def _fallback_reason(self, choice: int) -> str:
        """Only for ensembles without the finish_reason output: length iff the limit was hit."""
        produced = self._output_tokens.get(choice)
        return "length" if produced is not None and produced >= self.plan.max_tokens else "stop"

    def usage(self) -> Usage:
        """Exact counts from the ensemble; unknown when it does not report them."""
        prompts = len(self.plan.requests) // max(1, self.requests_per_prompt)
        if len(self._input_tokens) < prompts or len(self._output_tokens) < self.choices:
            return Usage()
        return Usage(sum(self._input_tokens.values()), sum(self._output_tokens.values()))
