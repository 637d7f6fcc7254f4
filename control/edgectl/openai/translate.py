"""OpenAI request fields -> the ensemble's inputs, for the ensemble a model really is.

The gateway forwards values and lets the ensemble validate them (its messages name
the field; see ``triton.api_error``).  Where an ensemble lacks an input the gateway
either has an exact equivalent (``n`` as n requests, ``ignore_eos`` as ``min_length``
= ``max_tokens``) or refuses with a 400 that says what the model cannot do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from edgectl.openai.ensemble import Capabilities
from edgectl.openai.errors import bad_request
from edgectl.openai.schemas import ChatRequest, CompletionRequest

DEFAULT_MAX_TOKENS = 256  # chat without max_tokens, when the model states no limit


@dataclass
class Plan:
    """What to send: one input dict per ensemble request, and how choices are numbered."""

    requests: list[dict[str, Any]]
    choices_per_request: int  # >1 when the ensemble makes the n sequences itself
    max_tokens: int


def _guide(body: ChatRequest | CompletionRequest) -> tuple[str, str] | None:
    fmt = body.response_format
    if fmt is not None and fmt.type == "json_object":
        return "json", ""
    if fmt is not None and fmt.type == "json_schema" and fmt.json_schema is not None:
        return "json_schema", json.dumps(fmt.json_schema.schema_)
    if body.guided_regex:
        return "regex", body.guided_regex
    if body.guided_grammar:
        return "ebnf_grammar", body.guided_grammar
    return None


def _param_of_guide(body: ChatRequest | CompletionRequest) -> str:
    if body.guided_regex:
        return "guided_regex"
    return "guided_grammar" if body.guided_grammar else "response_format"


def _common(body: ChatRequest | CompletionRequest, caps: Capabilities, stream: bool) -> dict:
    limit = body.output_limit or caps.max_output_len or DEFAULT_MAX_TOKENS
    # Log probabilities are asked for streamed even when the client is not streaming:
    # each engine response then carries about one token, so each token gets its own text.
    # A unary (not decoupled) ensemble refuses stream=true: it answers whole.
    streamed = (stream or body.logprob_count is not None) and caps.decoupled
    inputs: dict[str, Any] = {"max_tokens": limit, "stream": streamed}
    optional = {
        "temperature": body.temperature, "top_p": body.top_p,
        "presence_penalty": body.presence_penalty, "frequency_penalty": body.frequency_penalty,
    }  # fmt: skip
    inputs.update({name: value for name, value in optional.items() if value is not None})
    if body.top_k is not None and body.top_k > 0:  # 0 and -1 mean "no top-k", as in vLLM
        inputs["top_k"] = body.top_k
    if body.temperature and "top_k" not in inputs and body.top_p is None:
        # A temperature asks to sample, but TensorRT-LLM's rules decode greedily unless
        # top_k or top_p is set: sample from the whole distribution, as OpenAI does.
        inputs["top_p"] = 1.0
    if body.stop_words:
        inputs["stop_words"] = body.stop_words
    if body.min_tokens:
        inputs["min_tokens" if caps.takes("min_tokens") else "min_length"] = body.min_tokens
    if body.ignore_eos:
        if caps.takes("ignore_eos"):
            inputs["ignore_eos"] = True
        else:  # the end token cannot end a sequence that must reach max_tokens
            inputs["min_tokens" if caps.takes("min_tokens") else "min_length"] = limit
    guide = _guide(body)
    if guide is not None:
        if not caps.takes("guided_decoding_guide_type"):
            raise bad_request(
                f"model {caps.name} does not support structured output (its ensemble has no "
                "guided_decoding_guide_type input)", _param_of_guide(body),
            )  # fmt: skip
        inputs["guided_decoding_guide_type"] = guide[0]
        if guide[1]:
            inputs["guided_decoding_guide"] = guide[1]
    if body.logprob_count is not None:
        if body.logprob_count > 1:
            raise bad_request(
                "the engine returns the log probability of the chosen token only: "
                "at most 1 alternative per token", "top_logprobs"
                if isinstance(body, ChatRequest) else "logprobs",
            )  # fmt: skip
        if not caps.returns("output_log_probs"):
            raise bad_request(f"model {caps.name} does not return log probabilities", "logprobs")
        inputs["return_log_probs"] = True
    for flag, output in (("return_num_input_tokens", "num_input_tokens"),
                         ("return_num_output_tokens", "num_output_tokens")):  # fmt: skip
        if caps.takes(flag) and caps.returns(output):
            inputs[flag] = True
    return inputs


def _fan_out(inputs: dict, n: int, seed: int | None, caps: Capabilities) -> tuple[list, int]:
    """n choices: one request making n sequences, or n requests (seeds seed, seed+1, ...)."""
    if seed is not None:
        inputs["random_seed"] = seed
    if n == 1:
        return [inputs], 1
    if caps.takes("num_return_sequences") and caps.returns("sequence_index"):
        return [{**inputs, "num_return_sequences": n}], n
    copies = []
    for i in range(n):
        copy = dict(inputs)
        if seed is not None:
            copy["random_seed"] = (seed + i) % 2**64
        copies.append(copy)
    return copies, 1


def chat_plan(body: ChatRequest, caps: Capabilities, stream: bool) -> Plan:
    inputs = _common(body, caps, stream)
    messages = [{"role": m.role if m.role != "developer" else "system", "content": m.text()}
                for m in body.messages]  # fmt: skip
    if caps.takes("messages"):
        inputs.update(text_input="", messages=json.dumps(messages))
    elif len(messages) == 1 and messages[0]["role"] == "user":
        inputs.update(text_input=messages[0]["content"], apply_chat_template=True)
    else:
        raise bad_request(
            f"model {caps.name} renders a single user message only (its ensemble has no "
            "messages input): system prompts and multi-turn chat need it", "messages",
        )  # fmt: skip
    if not messages[-1]["content"] and len(messages) == 1:
        raise bad_request("Invalid 'messages[0].content': must not be empty", "messages[0].content")
    requests, per_request = _fan_out(inputs, body.n, body.seed, caps)
    return Plan(requests, per_request, inputs["max_tokens"])


def completion_plan(body: CompletionRequest, caps: Capabilities, stream: bool) -> Plan:
    """Every prompt times n choices, numbered prompt-major as OpenAI numbers them."""
    inputs = _common(body, caps, stream)
    if caps.takes("apply_chat_template"):
        inputs["apply_chat_template"] = False
    requests: list[dict[str, Any]] = []
    per_request = 1
    for prompt in body.prompts:
        batch, per_request = _fan_out({**inputs, "text_input": prompt}, body.n, body.seed, caps)
        requests.extend(batch)
    return Plan(requests, per_request, inputs["max_tokens"])
