"""edgectl's configuration: one YAML file, validated, with ``--set key=value`` overrides.

Unknown keys and bad values are errors that name the key (``server.http_port``),
so a typo never silently falls back to a default.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from edgectl.errors import EdgectlError

DEFAULT_CONFIG_NAME = "edgectl.yaml"
ModelT = TypeVar("ModelT", bound=BaseModel)
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


def cache_dir() -> Path:
    """Where built models are kept between runs (outside git)."""
    return Path(os.environ.get("EDGECTL_CACHE", Path.home() / ".cache" / "edgectl")).expanduser()


class StrictModel(BaseModel):
    """A schema that refuses unknown keys, so a typo in a YAML file names itself."""

    model_config = ConfigDict(extra="forbid")


class _Strict(StrictModel):
    # --set values are parsed as YAML, so "name=2024" arrives as a number.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, coerce_numbers_to_str=True)


class ServerConfig(_Strict):
    """The local tritonserver process."""

    host: str = "127.0.0.1"
    http_port: int = Field(8000, ge=1, le=65535)
    grpc_port: int = Field(8001, ge=1, le=65535)
    metrics_port: int = Field(8002, ge=1, le=65535)
    workdir: Path = Path(".edgectl")
    ready_timeout_s: float = Field(180.0, gt=0)
    stop_grace_s: float = Field(15.0, gt=0)
    # A dead engine stub: "reload" just that model (fast; requests in flight on it hang
    # until their client times out) or "restart" tritonserver (they fail at once).
    on_stub_crash: Literal["reload", "restart"] = "reload"
    log_verbose: int = Field(0, ge=0, le=3)


class SpeculativeConfig(_Strict):
    """Speculative decoding in the CPU engine step, fixed when the pipeline is built."""

    mode: Literal["none", "prompt_lookup", "draft"] = "none"
    num_assistant_tokens: int = Field(5, ge=1, le=32)
    max_ngram_size: int = Field(3, ge=1, le=16)
    draft: Path | None = None  # a built CPU artifact with the target's tokenizer

    @model_validator(mode="after")
    def _draft_named(self) -> SpeculativeConfig:
        if self.mode == "draft":
            if self.draft is None:
                raise ValueError("mode draft needs draft: the folder of a built CPU model")
            if not (Path(self.draft).expanduser() / "openvino_model.xml").is_file():
                raise ValueError(f"draft {self.draft} is not a built CPU model folder")
        return self


class EngineConfig(_Strict):
    """Limits and scheduler settings rendered into the model repository."""

    max_batch_size: int = Field(64, ge=1, le=1024)
    max_input_len: int = Field(1024, ge=1)
    max_output_len: int = Field(512, ge=1)
    max_num_seqs: int = Field(32, ge=1)
    max_queue_size: int = Field(64, ge=0)
    queue_timeout_s: float = Field(30.0, gt=0)
    max_num_tokens: int = Field(512, ge=16)
    kv_cache_gb: float = Field(1.0, gt=0)
    enable_kv_cache_reuse: bool = True
    exclude_input_in_output: bool = True
    max_request_seconds: float = Field(600.0, gt=0)
    preprocessing_instances: int = Field(1, ge=1, le=16)
    preprocessing_dynamic_batching: bool = True
    preprocessing_queue_delay_us: int = Field(100, ge=0)
    # NVIDIA's decoupled_mode: true streams (gRPC streams, generate_stream); false answers
    # gRPC ModelInfer and HTTP /infer with the whole result and refuses streaming.
    decoupled: bool = True
    # Unary mode (CPU engine): instances of the non-decoupled fronts (engine step, BLS)
    # and the requests each runs at once; the one decoupled engine batches them all.
    front_instances: int = Field(2, ge=1, le=64)
    front_max_concurrent: int = Field(16, ge=1, le=1024)
    # CPU engine, load-time: activations quantized per group of this size at run time
    # (0 = off: float activations); KV-cache element type (None = the artifact's own).
    dynamic_quantization_group_size: int = Field(32, ge=0, le=4096)
    kv_cache_precision: Literal["u8", "f16", "f32"] | None = None
    speculative: SpeculativeConfig = SpeculativeConfig()
    rag_template: Literal["zero_shot", "few_shot"] = "zero_shot"
    rag_reserve_tokens: int = Field(8, ge=0)
    coalesce: bool = False  # on: identical greedy/seeded requests in flight share a sequence
    response_cache_size: int = Field(0, ge=0, le=100_000)  # 0: off
    response_cache_ttl_s: float = Field(60.0, gt=0)
    inference_precision: Literal["f32", "bf16"] = "f32"  # CPU compute precision hint


class ModelConfig(_Strict):
    """One served model: its ensemble name and the built artifact it serves."""

    name: str = Field("ensemble", pattern=NAME_PATTERN)
    recipe: Path = Path("build/smollm2-135m-int8.yaml")
    engine: Literal["cpu", "trtllm"] = "cpu"
    artifact: Path | None = None  # default: the recipe's output in the cache


class ClientConfig(_Strict):
    protocol: Literal["http", "grpc"] = "grpc"
    timeout_s: float = Field(120.0, gt=0)


class OpenAIGatewayConfig(_Strict):
    """The OpenAI-compatible gateway started beside tritonserver by ``deploy --local``."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(9000, ge=1, le=65535)
    # The NAME of an environment variable holding the API key (never the key itself);
    # unset: no key is asked for.
    api_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    max_body_bytes: int = Field(1 << 20, ge=1024)
    ready_timeout_s: float = Field(60.0, gt=0)


class K8sConfig(_Strict):
    """``deploy/status --target k8s``: the Helm release of the chart in ``helm/``."""

    # Helm release names are DNS labels of at most 53 characters.
    release: str = Field("edgectl", pattern=r"^[a-z0-9]([-a-z0-9]{0,51}[a-z0-9])?$")
    namespace: str = Field("default", pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
    profile: Literal["cpu", "gpu"] = "cpu"
    values_files: list[Path] = []  # applied after helm/values-<profile>.yaml; later files win
    helm_timeout_s: int = Field(1800, ge=1)
    kube_context: str | None = None


class EdgectlConfig(_Strict):
    server: ServerConfig = ServerConfig()
    engine: EngineConfig = EngineConfig()
    model: ModelConfig = ModelConfig()
    client: ClientConfig = ClientConfig()
    openai: OpenAIGatewayConfig = OpenAIGatewayConfig()
    k8s: K8sConfig = K8sConfig()

    @field_validator("server")
    @classmethod
    def _ports_distinct(cls, server: ServerConfig) -> ServerConfig:
        ports = [server.http_port, server.grpc_port, server.metrics_port]
        if len(set(ports)) != 3:
            raise ValueError(f"http_port, grpc_port and metrics_port must differ, got {ports}")
        return server


def format_validation_error(err: ValidationError, what: str) -> str:
    """One line per bad key, named by its dotted path."""
    lines = []
    for item in err.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = "unknown key" if item["type"] == "extra_forbidden" else item["msg"]
        lines.append(f"  {key}: {message}")
    return f"invalid {what}:\n" + "\n".join(lines)


def load_yaml_mapping(path: Path, what: str) -> dict[str, Any]:
    """Safely load a YAML file that must hold a mapping (empty file -> {})."""
    try:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EdgectlError(f"{what} {path} does not exist") from None
    except yaml.YAMLError as err:
        raise EdgectlError(f"{what} {path} is not valid YAML: {err}") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise EdgectlError(f"{what} {path} must hold a mapping at the top level")
    return loaded or {}


def load_validated_yaml(path: Path, schema: type[ModelT], what: str) -> ModelT:
    """A YAML file validated by a pydantic schema; errors name the file and the field."""
    data = load_yaml_mapping(path, what)
    try:
        return schema.model_validate(data)
    except ValidationError as err:
        raise EdgectlError(format_validation_error(err, f"{what} {path}")) from None


def _apply_override(data: dict[str, Any], assignment: str) -> None:
    key, sep, raw = assignment.partition("=")
    if not sep or not key:
        raise EdgectlError(
            f"--set expects KEY=VALUE (e.g. server.http_port=9000), got {assignment!r}"
        )
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise EdgectlError(f"--set {key}: {part} is not a section")
    node[parts[-1]] = yaml.safe_load(raw) if raw else raw


def load_config(path: Path | None, overrides: tuple[str, ...] = ()) -> EdgectlConfig:
    """Read ``path`` (or ``./edgectl.yaml`` if present), apply overrides, validate."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is None and Path(DEFAULT_CONFIG_NAME).is_file():
        path = Path(DEFAULT_CONFIG_NAME)
    if path is not None:
        source = str(path)
        data = load_yaml_mapping(path, "config file")
    for assignment in overrides:
        _apply_override(data, assignment)
    if overrides:
        source += " + --set overrides"
    try:
        return EdgectlConfig.model_validate(data)
    except ValidationError as err:
        raise EdgectlError(format_validation_error(err, f"configuration in {source}")) from None
