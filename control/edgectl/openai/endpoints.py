"""What differs between ``/v1/chat/completions`` and ``/v1/completions``; the rest is shared.

Each endpoint says which body it parses, how it plans the ensemble requests, how many
prompts it has, and how its events become the SSE stream or the whole response.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from pydantic import BaseModel

from edgectl.openai.ensemble import Capabilities
from edgectl.openai.responses import Assembler
from edgectl.openai.schemas import ChatRequest, CompletionRequest
from edgectl.openai.streaming import Timed, chat_sse, completion_sse
from edgectl.openai.translate import Plan, chat_plan, completion_plan


class ChatEndpoint:
    schema = ChatRequest
    id_prefix = "chatcmpl"

    def plan(self, body: ChatRequest, caps: Capabilities) -> Plan:
        return chat_plan(body, caps, stream=body.stream)

    def prompts(self, body: ChatRequest) -> int:
        return 1

    def stream(self, timed: Timed, assembler: Assembler, body: ChatRequest) -> AsyncIterator[bytes]:
        return chat_sse(timed, assembler, timed.generation.choices, body.include_usage)

    def whole(self, timed: Timed, assembler: Assembler, body: ChatRequest) -> BaseModel:
        generation = timed.generation
        return assembler.chat_completion(generation.choices, generation.usage())


class CompletionEndpoint:
    schema = CompletionRequest
    id_prefix = "cmpl"

    def plan(self, body: CompletionRequest, caps: Capabilities) -> Plan:
        return completion_plan(body, caps, stream=body.stream)

    def prompts(self, body: CompletionRequest) -> int:
        return len(body.prompts)

    @staticmethod
    def echo(body: CompletionRequest, choices: int) -> Callable[[int], str]:
        """The text a choice starts with: its prompt when ``echo`` is set (prompt-major)."""
        prompts, per_prompt = body.prompts, max(1, choices // len(body.prompts))
        return lambda choice: prompts[choice // per_prompt] if body.echo else ""

    def stream(
        self, timed: Timed, assembler: Assembler, body: CompletionRequest
    ) -> AsyncIterator[bytes]:
        echo = self.echo(body, timed.generation.choices)
        return completion_sse(timed, assembler, echo, body.include_usage)

    def whole(self, timed: Timed, assembler: Assembler, body: CompletionRequest) -> Any:
        choices = timed.generation.choices
        echo = self.echo(body, choices)
        prefixes = [echo(i) for i in range(choices)] if body.echo else []
        return assembler.completion(choices, timed.generation.usage(), prefixes)
