"""The artifact manifest: what ``edgectl build`` wrote, read back by deploy and by the engine step.

One typed record with one writer (:func:`write_manifest`) and one reader
(:func:`read_manifest`), so the build, the deploy and the engine's version check
agree on every field.
"""

from __future__ import annotations

import hashlib
from importlib import metadata
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

MANIFEST = "manifest.json"
# Tool versions recorded in the manifest; the engine step refuses a mismatch at load time.
RUNTIME_TOOLS = ("openvino", "openvino-genai", "openvino-tokenizers")
BUILD_TOOLS = ("optimum-intel", "nncf", "nvidia-modelopt", "transformers", "torch")


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServingIds(_Record):
    """Token ids the served model needs from its checkpoint."""

    end_id: int
    pad_id: int


class SourceInfo(_Record):
    checkpoint: str
    weights_sha256: dict[str, str] = {}


class ArtifactFile(_Record):
    bytes: int
    sha256: str


class EngineBuild(_Record):
    """The TensorRT-LLM engine compile: run here, or planned for a GPU node."""

    command: list[str]
    status: str
    image: str

    @property
    def built(self) -> bool:
        return self.status == "built"


class Manifest(_Record):
    """Everything recorded about one built artifact (``<artifact>/manifest.json``)."""

    builder_version: int = 0
    recipe: dict = {}
    engine: str = "openvino_continuous_batching"  # or "tensorrt_llm"
    quantization: dict = {}
    engine_build: EngineBuild | None = None
    runtime_tools: dict[str, str] = {}
    source: SourceInfo | None = None
    serving: ServingIds | None = None
    build_tools: dict[str, str] = {}
    artifacts: dict[str, ArtifactFile] = {}
    build_seconds: float = 0.0

    @property
    def total_bytes(self) -> int:
        return sum(item.bytes for item in self.artifacts.values())


class ManifestError(Exception):
    """The folder has no manifest, or one this version cannot read."""


def read_manifest(artifact: Path) -> Manifest:
    path = Path(artifact) / MANIFEST
    if not path.is_file():
        raise ManifestError(
            f"{artifact} is not a built model (no {MANIFEST}); run `edgectl build RECIPE` first"
        )
    try:
        return Manifest.model_validate_json(path.read_text(encoding="utf-8"))
    except ValidationError as err:
        raise ManifestError(
            f"{path} is not a manifest this edgectl can read ({err.error_count()} problems, "
            f"first: {err.errors()[0]['loc']}: {err.errors()[0]['msg']}); rebuild with --force"
        ) from None


def write_manifest(folder: Path, manifest: Manifest) -> Path:
    path = Path(folder) / MANIFEST
    path.write_text(manifest.model_dump_json(indent=2, exclude_none=True), encoding="utf-8")
    return path


def tool_versions(names: tuple[str, ...]) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
