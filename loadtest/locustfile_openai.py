"""OpenAI user: the gateway's /v1/completions or /v1/chat/completions, streamed as SSE.

Run through `edgectl loadtest --target openai://127.0.0.1:9000 ...`, which passes the
step spec (--edgectl-spec).  The same prompts and output length as the gRPC and HTTP
users: a profile's chat template becomes a chat request with one user message, and a
fixed output length (an end id the model never emits) becomes ``ignore_eos``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from edgectl.loadtest.locust_user import HttpLlmUser


def openai_body(model: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The endpoint and body that ask the gateway for what ``inputs`` ask Triton for."""
    body: dict[str, Any] = {
        "model": model, "max_tokens": inputs["max_tokens"], "stream": inputs["stream"],
    }  # fmt: skip
    if "end_id" in inputs:
        body["ignore_eos"] = True
    if inputs.get("apply_chat_template"):
        body["messages"] = [{"role": "user", "content": inputs["text_input"]}]
        return "/v1/chat/completions", body
    body["prompt"] = inputs["text_input"]
    return "/v1/completions", body


def text_of(choice: dict[str, Any]) -> str:
    if "text" in choice:
        return choice["text"] or ""
    holder = choice.get("delta") or choice.get("message") or {}
    return holder.get("content") or ""


class OpenAIUser(HttpLlmUser):
    request_type = "openai-sse"

    def stream(self, inputs: dict[str, Any]) -> Iterator[str]:
        path, body = openai_body(self.spec.model, inputs)
        with self._http.stream("POST", path, json=body) as response:
            if response.status_code != 200:
                response.read()
                raise RuntimeError(f"HTTP {response.status_code}: {response.text}")
            if not body["stream"]:
                response.read()
                yield text_of(response.json()["choices"][0])
                return
            for line in response.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                choices = json.loads(line[6:]).get("choices") or []
                piece = "".join(text_of(choice) for choice in choices)
                if piece:
                    yield piece
