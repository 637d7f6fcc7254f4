"""The local gateway process: its command line, state, refusals; the exposure warning."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from edgectl.config import OpenAIGatewayConfig
from edgectl.deploy.gateway import LocalGateway
from edgectl.errors import EdgectlError
from edgectl.openai.serve import api_key_from, exposure_warning


def test_the_command_is_the_one_the_chart_runs(tmp_path: Path) -> None:
    config = OpenAIGatewayConfig(port=9100, api_key_env="MY_KEY", max_body_bytes=4096)
    command = LocalGateway(config, tmp_path).command("127.0.0.1:8001")
    assert command[1:] == [
        "-m", "edgectl.cli", "openai", "serve", "--host", "127.0.0.1", "--port", "9100",
        "--triton-grpc", "127.0.0.1:8001", "--max-body-bytes", "4096", "--api-key-env", "MY_KEY",
    ]  # fmt: skip


def test_a_port_in_use_is_refused_naming_the_key(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        config = OpenAIGatewayConfig(port=busy.getsockname()[1])
        with pytest.raises(EdgectlError, match="openai.port="):
            LocalGateway(config, tmp_path).start("127.0.0.1:1")


def test_a_missing_key_variable_is_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("EDGECTL_NO_SUCH_KEY", raising=False)
    with pytest.raises(EdgectlError, match="EDGECTL_NO_SUCH_KEY"):
        api_key_from("EDGECTL_NO_SUCH_KEY")
    monkeypatch.setenv("EDGECTL_NO_SUCH_KEY", "k")
    assert api_key_from("EDGECTL_NO_SUCH_KEY") == "k"
    assert api_key_from(None) is None


def test_no_state_means_not_running(tmp_path: Path) -> None:
    gateway = LocalGateway(OpenAIGatewayConfig(), tmp_path)
    assert gateway.running() is None
    assert gateway.stop() is False


def test_exposure_warning_only_beyond_loopback() -> None:
    assert exposure_warning("127.0.0.1", None) is None
    assert "unauthenticated" in exposure_warning("0.0.0.0", None)
    assert "$KEY" in exposure_warning("0.0.0.0", "KEY")


def test_config_names_a_bad_key_variable() -> None:
    with pytest.raises(ValueError):
        OpenAIGatewayConfig(api_key_env="not a name")
