"""Every response the gateway sends has exactly the fields docs/openai-api.md's table lists."""

from __future__ import annotations

import json
import re

import pytest
from starlette.testclient import TestClient

from edgectl.openai.app import GatewaySettings, create_app
from tests.paths import REPO_ROOT
from tests.unit.openai.fakes import FakeTriton

CHAT = {"model": "ensemble", "messages": [{"role": "user", "content": "hi"}]}
PROMPT = {"model": "ensemble", "prompt": "hi"}


def shape_table() -> dict[str, tuple[set[str], set[str], set[str]]]:
    """response -> (fields, fields only with include_usage, choice fields)."""
    text = (REPO_ROOT / "docs" / "openai-api.md").read_text(encoding="utf-8")
    section = text.split("## Response shapes", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 5 or cells[0] in ("response", "---"):
            continue
        fields, _, optional = cells[3].partition("(")
        names = {name.strip() for name in fields.split(",") if name.strip()}
        extra = set(re.findall(r"^(\w+) with include_usage", optional))
        choice = {name.strip() for name in cells[4].split(",") if name.strip() not in ("", "–")}
        rows[cells[0]] = (names, extra, choice)
    return rows


SHAPES = shape_table()


def test_the_table_was_read() -> None:
    assert set(SHAPES) == {"chat completion", "chat chunk", "completion", "completion chunk",
                           "model list", "model", "error"}  # fmt: skip


def events(text: str) -> list[dict]:
    return [json.loads(line[6:]) for line in text.split("\n\n") if line and line != "data: [DONE]"]


def check(body: dict, response: str, include_usage: bool = False) -> None:
    fields, extra, choice = SHAPES[response]
    assert set(body) == fields | (extra if include_usage else set()), (response, body)
    for element in body.get("choices", []):
        assert set(element) == choice, (response, element)


@pytest.fixture
def client() -> TestClient:
    return TestClient(create_app(GatewaySettings(), triton=FakeTriton()))


def test_non_streamed_bodies(client) -> None:
    check(client.post("/v1/chat/completions", json=CHAT).json(), "chat completion")
    check(client.post("/v1/completions", json=PROMPT).json(), "completion")
    listing = client.get("/v1/models").json()
    check(listing, "model list")
    for model in listing["data"]:
        check(model, "model")
    check(client.get("/v1/models/ensemble").json(), "model")
    check(client.post("/v1/chat/completions", json={}).json(), "error")
    assert set(client.post("/v1/completions", json={}).json()["error"]) == {
        "message", "type", "param", "code"
    }  # fmt: skip


@pytest.mark.parametrize("include_usage", [False, True])
def test_streamed_chunks(client, include_usage: bool) -> None:
    options = {"stream": True, "stream_options": {"include_usage": include_usage}}
    for body, response in ((CHAT, "chat chunk"), (PROMPT, "completion chunk")):
        path = "/v1/chat/completions" if "messages" in body else "/v1/completions"
        reply = client.post(path, json={**body, **options})
        assert reply.text.endswith("data: [DONE]\n\n")
        for chunk in events(reply.text):
            check(chunk, response, include_usage)
