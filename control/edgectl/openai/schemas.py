"""The request bodies the gateway accepts, as pydantic models with OpenAI's limits.

Unknown fields are refused (as OpenAI does), so a misspelt parameter names itself
instead of being silently ignored.  ``top_k``, ``min_tokens``, ``ignore_eos``,
``guided_regex`` and ``guided_grammar`` are vLLM-style extensions.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgectl.openai.errors import ApiError, bad_request

MAX_STOP = 4  # OpenAI accepts up to 4 stop sequences
MAX_N = 8  # choices per request; more would only queue behind each other on the engine


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def cross_check(self) -> None:
        """Rules between fields, raised as a 400 naming the field at fault."""


class StreamOptions(_Body):
    include_usage: bool = False


class JsonSchemaFormat(_Body):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Body):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class TextPart(_Body):
    type: Literal["text"]
    text: str


class Message(_Body):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


Probability = Annotated[float, Field(gt=0, le=1)]
Penalty = Annotated[float, Field(ge=-2, le=2)]


class _Sampling(_Body):
    """Fields both endpoints share."""

    model: str = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: Probability | None = None
    top_k: int | None = Field(None, ge=-1)
    seed: int | None = Field(None, ge=0, le=2**64 - 1)
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1, le=MAX_N)
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None
    min_tokens: int | None = Field(None, ge=0)
    ignore_eos: bool = False
    guided_regex: str | None = Field(None, min_length=1)
    guided_grammar: str | None = Field(None, min_length=1)
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, stop: str | list[str] | None) -> list[str] | None:
        if stop is None:
            return None
        words = [stop] if isinstance(stop, str) else stop
        if len(words) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop sequences, got {len(words)}")
        if any(not word for word in words):
            raise ValueError("stop sequences must not be empty")
        return words

    def cross_check(self) -> None:
        if self.stream_options is not None and not self.stream:
            raise bad_request(
                "stream_options is only allowed when stream is true", "stream_options"
            )
        fmt = self.response_format
        if fmt is not None and fmt.type == "json_schema" and fmt.json_schema is None:
            raise bad_request(
                "type json_schema needs a json_schema object", "response_format.json_schema"
            )
        guides = [self.response_format and self.response_format.type != "text",
                  self.guided_regex, self.guided_grammar]  # fmt: skip
        if sum(bool(guide) for guide in guides) > 1:
            raise bad_request(
                "give one of response_format, guided_regex, guided_grammar", "response_format"
            )

    @property
    def stop_words(self) -> list[str]:
        return list(self.stop or [])  # type: ignore[arg-type]

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatRequest(_Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)

    def cross_check(self) -> None:
        super().cross_check()
        if self.top_logprobs is not None and not self.logprobs:
            raise bad_request("top_logprobs needs logprobs: true", "top_logprobs")

    @property
    def output_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def logprob_count(self) -> int | None:
        """None: no log probabilities; otherwise how many alternatives per token."""
        return (self.top_logprobs or 0) if self.logprobs else None


class CompletionRequest(_Sampling):
    prompt: str | list[str]
    max_tokens: int | None = Field(16, ge=1)  # OpenAI's documented default for completions
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: bool = False
    best_of: int | None = Field(None, ge=1)

    @field_validator("prompt")
    @classmethod
    def _prompts(cls, prompt: str | list[str]) -> str | list[str]:
        prompts = [prompt] if isinstance(prompt, str) else prompt
        if not prompts or any(not text for text in prompts):
            raise ValueError("prompt must be a non-empty string or a list of them")
        return prompt

    def cross_check(self) -> None:
        super().cross_check()
        if self.best_of is not None and self.best_of != self.n:
            raise bad_request("best_of other than n is not supported", "best_of")

    @property
    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    @property
    def output_limit(self) -> int | None:
        return self.max_tokens

    @property
    def logprob_count(self) -> int | None:
        return self.logprobs


def _param(loc: tuple[Any, ...]) -> str:
    """pydantic's location as OpenAI names a field: ``messages[0].role``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part not in ("str", "list[str]", "list[TextPart]", "int", "function-after"):
            text += f".{part}" if text else str(part)
    return text


def parse_body(model: type[_Body], data: Any) -> Any:
    """Validate a decoded JSON body; the first problem becomes a 400 naming its field."""
    if not isinstance(data, dict):
        raise bad_request("the request body must be a JSON object", code="invalid_json")
    try:
        body = model.model_validate(data)
    except ValidationError as err:
        raise validation_error(err) from None
    body.cross_check()
    return body


def validation_error(err: ValidationError) -> ApiError:
    first = err.errors()[0]
    param = _param(first["loc"]) or None
    if first["type"] == "extra_forbidden":
        return bad_request(f"Unrecognized request argument supplied: {param}", param,
                           code="unknown_parameter")  # fmt: skip
    if first["type"] == "missing":
        return bad_request(f"Missing required parameter: '{param}'.", param,
                           code="missing_required_parameter")  # fmt: skip
    message = first["msg"].removeprefix("Value error, ")
    return bad_request(f"Invalid '{param}': {message}" if param else message, param)
