from __future__ import annotations

from pathlib import Path

import pytest

from edgectl.config import DEFAULT_CONFIG_NAME, EdgectlConfig, load_config
from edgectl.errors import EdgectlError


@pytest.fixture(autouse=True)
def empty_cwd(tmp_path, monkeypatch) -> Path:
    """Run every test in an empty directory, so no stray ./edgectl.yaml is picked up."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def config_error(path: Path | None = None, *overrides: str) -> str:
    with pytest.raises(EdgectlError) as err:
        load_config(path, overrides)
    return str(err.value)


def test_defaults_load_without_a_file():
    config = load_config(None)
    assert config == EdgectlConfig()
    assert (config.server.http_port, config.server.grpc_port, config.server.metrics_port) == (
        8000,
        8001,
        8002,
    )
    assert config.model.engine == "cpu"


def test_edgectl_yaml_in_the_working_directory_is_used(empty_cwd):
    write(empty_cwd / DEFAULT_CONFIG_NAME, "server:\n  http_port: 9100\n")
    assert load_config(None).server.http_port == 9100


def test_empty_file_means_defaults(empty_cwd):
    assert load_config(write(empty_cwd / "c.yaml", "")) == EdgectlConfig()


def test_file_values_are_loaded(empty_cwd):
    path = write(empty_cwd / "c.yaml", "engine:\n  max_input_len: 256\nmodel:\n  name: smol\n")
    config = load_config(path)
    assert (config.engine.max_input_len, config.model.name) == (256, "smol")


def test_unknown_key_is_named(empty_cwd):
    message = config_error(write(empty_cwd / "c.yaml", "server:\n  htp_port: 9000\n"))
    assert "server.htp_port: unknown key" in message
    assert "c.yaml" in message


def test_unknown_section_is_named(empty_cwd):
    assert "servers: unknown key" in config_error(write(empty_cwd / "c.yaml", "servers: {}\n"))


@pytest.mark.parametrize(
    ("yaml_text", "key"),
    [
        ("server:\n  http_port: abc\n", "server.http_port"),
        ("server:\n  http_port: 70000\n", "server.http_port"),
        ("engine:\n  max_batch_size: 0\n", "engine.max_batch_size"),
        ("model:\n  engine: gpu\n", "model.engine"),
        ("model:\n  name: 'bad name'\n", "model.name"),
        ("client:\n  protocol: ftp\n", "client.protocol"),
    ],
)
def test_bad_value_names_the_key(empty_cwd, yaml_text, key):
    assert f"  {key}: " in config_error(write(empty_cwd / "c.yaml", yaml_text))


def test_set_overrides_apply_on_top_of_the_file(empty_cwd):
    path = write(empty_cwd / "c.yaml", "server:\n  http_port: 9100\n  grpc_port: 9101\n")
    config = load_config(path, ("server.http_port=9000", "engine.enable_kv_cache_reuse=false"))
    assert (config.server.http_port, config.server.grpc_port) == (9000, 9101)
    assert config.engine.enable_kv_cache_reuse is False


def test_set_overrides_apply_without_a_file():
    assert load_config(None, ("server.http_port=9000",)).server.http_port == 9000


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("server.http_port=0", "server.http_port"),
        ("server.htp_port=9000", "server.htp_port: unknown key"),
        ("server.http_port=x", "server.http_port"),
        ("server.http_port", "--set expects KEY=VALUE"),
        ("=9000", "--set expects KEY=VALUE"),
    ],
)
def test_bad_set_override_is_rejected(override, fragment):
    assert fragment in config_error(None, override)


def test_set_below_a_value_is_rejected():
    message = config_error(None, "server.http_port=8000", "server.http_port.x=1")
    assert "server.http_port.x: http_port is not a section" in message


def test_override_error_says_it_came_from_set():
    assert "--set overrides" in config_error(None, "server.http_port=0")


def test_duplicate_ports_are_rejected():
    message = config_error(None, "server.grpc_port=8000")
    assert "server:" in message
    assert "must differ" in message


def test_file_holding_a_list_is_rejected(empty_cwd):
    message = config_error(write(empty_cwd / "c.yaml", "- server\n- engine\n"))
    assert "must hold a mapping" in message


def test_invalid_yaml_is_rejected(empty_cwd):
    assert "is not valid YAML" in config_error(write(empty_cwd / "c.yaml", "server: [\n"))


def test_missing_file_is_reported(empty_cwd):
    message = config_error(empty_cwd / "nope.yaml")
    assert "nope.yaml does not exist" in message


def test_the_example_config_documents_exactly_the_defaults() -> None:
    example = Path(__file__).resolve().parents[2] / "edgectl.example.yaml"
    assert load_config(example) == EdgectlConfig()
