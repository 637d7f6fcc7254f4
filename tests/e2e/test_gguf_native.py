"""The ensemble answering from a gguf-native build: the embedded GGUF's own blocks, served.

Built into the edgectl cache like the default model (reused by later runs); the server runs
with u8 KV cache and dynamic activation quantization, the serving settings under test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edgectl.client import GenerateRequest
from tests.e2e.conftest import LiveServer, running_server, server_config
from tests.paths import REPO_ROOT

pytestmark = pytest.mark.e2e
RECIPE = REPO_ROOT / "build" / "smollm2-135m-gguf-native.yaml"


@pytest.fixture(scope="module")
def gguf_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    from edgectl.build.builder import build
    from edgectl.build.recipe import load_recipe

    artifact = build(load_recipe(RECIPE)).artifact
    config = server_config(
        tmp_path_factory.mktemp("triton-gguf"),
        artifact,
        kv_cache_precision="u8",
        dynamic_quantization_group_size=32,
    )
    with running_server(config) as live:
        yield live


def test_the_artifact_is_the_ggufs_blocks(gguf_server: LiveServer) -> None:
    from edgectl.runtime.manifest import read_manifest

    manifest = read_manifest(Path(str(gguf_server.config.model.artifact)))
    assert manifest.quantization["weights"] == "gguf-native"
    assert manifest.quantization["tensor_types"] == {"Q4_1": 210, "Q8_0": 1}
    assert any(name.endswith(".gguf") for name in manifest.source.weights_sha256)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_greedy_answer_names_paris(gguf_server: LiveServer, protocol: str) -> None:
    request = GenerateRequest(
        text_input="What is the capital of France?", max_tokens=32, apply_chat_template=True
    )
    pieces = list(gguf_server.client.generate("ensemble", request, protocol))
    assert "Paris" in "".join(pieces)


def test_streaming_works_from_the_gguf_build(gguf_server: LiveServer) -> None:
    request = GenerateRequest(
        text_input="Describe Paris in two sentences.",
        max_tokens=24,
        apply_chat_template=True,
        stream=True,
    )
    pieces = list(gguf_server.client.generate("ensemble", request, "grpc"))
    assert len(pieces) >= 3 and "".join(pieces).strip()
