"""OpenAI response bodies built with the ``openai`` package's own types.

Non-streamed: a ``ChatCompletion`` / ``Completion`` assembled from every event.
Streamed: one ``chat.completion.chunk`` / ``text_completion`` object per event, an
optional usage chunk (``stream_options.include_usage``: empty ``choices``), then
``data: [DONE]``.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

from openai.types import Completion, CompletionChoice, CompletionUsage
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessage
from openai.types.chat.chat_completion import Choice as ChatChoice
from openai.types.chat.chat_completion import ChoiceLogprobs
from openai.types.chat.chat_completion_chunk import Choice as ChunkChoice
from openai.types.chat.chat_completion_chunk import ChoiceDelta
from openai.types.chat.chat_completion_chunk import ChoiceLogprobs as ChunkLogprobs
from openai.types.chat.chat_completion_token_logprob import ChatCompletionTokenLogprob, TopLogprob
from openai.types.completion_choice import Logprobs

from edgectl.openai.generation import Event, Usage

DONE_LINE = b"data: [DONE]\n\n"


def sse(payload: str) -> bytes:
    return f"data: {payload}\n\n".encode()


def usage_of(usage: Usage) -> CompletionUsage | None:
    if not usage.known:
        return None
    prompt, completion = usage.prompt_tokens or 0, usage.completion_tokens or 0
    return CompletionUsage(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
    )


def token_entries(event: Event) -> list[tuple[str, float]]:
    """(token text, logprob) per generated token of one event.

    The engine reports text per response, not per token: a response that holds several
    tokens (held back inside a multibyte character or a possible stop word) puts its
    text on the last of them.
    """
    if not event.log_probs:
        return []
    texts = [""] * (len(event.log_probs) - 1) + [event.text]
    return list(zip(texts, event.log_probs, strict=True))


def chat_logprobs(entries: list[tuple[str, float]], top: int) -> list[ChatCompletionTokenLogprob]:
    result = []
    for text, logprob in entries:
        raw = list(text.encode("utf-8"))
        alternatives = [TopLogprob(token=text, logprob=logprob, bytes=raw)] if top else []
        result.append(
            ChatCompletionTokenLogprob(
                token=text, logprob=logprob, bytes=raw, top_logprobs=alternatives
            )
        )
    return result


def completion_logprobs(entries: list[tuple[str, float]], top: int, offset: int) -> Logprobs:
    offsets, position = [], offset
    for text, _ in entries:
        offsets.append(position)
        position += len(text)
    return Logprobs(
        tokens=[text for text, _ in entries],
        token_logprobs=[logprob for _, logprob in entries],
        top_logprobs=[{text: logprob} for text, logprob in entries] if top else None,
        text_offset=offsets,
    )


@dataclass
class ChoiceState:
    text: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    logprobs: list[tuple[str, float]] = field(default_factory=list)


class Assembler:
    """Identity of one response (id, created, model) and its chunk/body builders."""

    def __init__(self, model: str, prefix: str, logprob_count: int | None) -> None:
        self.id = f"{prefix}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model
        self.logprob_count = logprob_count
        self.choices: dict[int, ChoiceState] = {}
        self.offsets: dict[int, int] = {}  # streamed text per choice so far (completions)

    def add(self, event: Event) -> None:
        state = self.choices.setdefault(event.choice, ChoiceState())
        state.text.append(event.text)
        state.finish_reason = event.finish_reason or state.finish_reason
        state.logprobs += token_entries(event)

    # -- chat ---------------------------------------------------------------------------
    def chat_completion(self, choices: int, usage: Usage) -> ChatCompletion:
        return ChatCompletion(
            id=self.id, object="chat.completion", created=self.created, model=self.model,
            usage=usage_of(usage),
            choices=[self._chat_choice(index) for index in range(choices)],
        )  # fmt: skip

    def _chat_choice(self, index: int) -> ChatChoice:
        state = self.choices.get(index, ChoiceState())
        logprobs = None
        if self.logprob_count is not None:
            logprobs = ChoiceLogprobs(content=chat_logprobs(state.logprobs, self.logprob_count))
        return ChatChoice(
            index=index, finish_reason=state.finish_reason or "stop", logprobs=logprobs,
            message=ChatCompletionMessage(role="assistant", content="".join(state.text)),
        )  # fmt: skip

    def chat_chunk(
        self, choice: int, delta: ChoiceDelta, event: Event | None = None
    ) -> ChatCompletionChunk:
        logprobs = None
        if event is not None and self.logprob_count is not None:
            logprobs = ChunkLogprobs(
                content=chat_logprobs(token_entries(event), self.logprob_count)
            )
        return ChatCompletionChunk(
            id=self.id, object="chat.completion.chunk", created=self.created, model=self.model,
            choices=[ChunkChoice(
                index=choice, delta=delta, logprobs=logprobs,
                finish_reason=event.finish_reason if event else None,
            )],
        )  # fmt: skip

    def chat_usage_chunk(self, usage: Usage) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=self.id, object="chat.completion.chunk", created=self.created, model=self.model,
            choices=[], usage=usage_of(usage),
        )  # fmt: skip

    # -- completions ----------------------------------------------------------------------
    def completion(self, choices: int, usage: Usage, echo: list[str]) -> Completion:
        return Completion(
            id=self.id, object="text_completion", created=self.created, model=self.model,
            usage=usage_of(usage),
            choices=[self._completion_choice(index, echo) for index in range(choices)],
        )  # fmt: skip

    def _completion_choice(self, index: int, echo: list[str]) -> CompletionChoice:
        state = self.choices.get(index, ChoiceState())
        prefix = echo[index] if echo else ""
        logprobs = None
        if self.logprob_count is not None:
            logprobs = completion_logprobs(state.logprobs, self.logprob_count, len(prefix))
        return CompletionChoice(
            index=index, finish_reason=state.finish_reason or "stop", logprobs=logprobs,
            text=prefix + "".join(state.text),
        )  # fmt: skip

    def completion_chunk(self, event: Event, prefix: str = "") -> Completion:
        offset = self.offsets.get(event.choice, 0)
        text = prefix + event.text
        self.offsets[event.choice] = offset + len(text)
        logprobs = None
        if self.logprob_count is not None:
            logprobs = completion_logprobs(
                token_entries(event), self.logprob_count, offset + len(prefix)
            )
        return Completion(
            id=self.id, object="text_completion", created=self.created, model=self.model,
            choices=[CompletionChoice.model_construct(
                index=event.choice, text=text, logprobs=logprobs,
                finish_reason=event.finish_reason,
            )],
        )  # fmt: skip

    def completion_usage_chunk(self, usage: Usage) -> Completion:
        return Completion(
            id=self.id, object="text_completion", created=self.created, model=self.model,
            choices=[], usage=usage_of(usage),
        )  # fmt: skip
