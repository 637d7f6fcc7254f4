"""``edgectl build``: a recipe -> a served artifact in the cache, with a manifest.

Every output is written to a ``.partial`` sibling and renamed into place only when
complete, so an interrupted build never leaves an artifact a deploy would pick up.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgectl.build.output import library_output_to
from edgectl.build.recipe import EMBEDDED_SOURCE, Recipe, check_against_model
from edgectl.build.sources import embedded_gguf_path, hf_checkpoint_from_gguf
from edgectl.config import cache_dir
from edgectl.errors import EdgectlError
from edgectl.progress import Progress
from edgectl.runtime.manifest import (
    BUILD_TOOLS,
    RUNTIME_TOOLS,
    ArtifactFile,
    EngineBuild,
    Manifest,
    ServingIds,
    SourceInfo,
    read_manifest,
    sha256_file,
    tool_versions,
    write_manifest,
)
from edgectl.staging import staged_directory

# Bumped when the same recipe would now build a different artifact (a cached one is rebuilt).
BUILDER_VERSION = 3

# Writes a target's folder from the source checkpoint; returns its manifest fields.
Producer = Callable[[Path, Path, Progress], dict]


@dataclass
class BuildResult:
    artifact: Path
    manifest: Manifest
    reused: bool


def artifact_dir(recipe: Recipe, out: Path | None = None) -> Path:
    return (out or cache_dir() / "models") / recipe.name


def source_checkpoint(recipe: Recipe, progress: Progress) -> Path:
    """The HF checkpoint a recipe starts from (the embedded one is converted once and cached)."""
    if recipe.source != EMBEDDED_SOURCE:
        path = Path(recipe.source)
        if not (path / "config.json").is_file():
            raise EdgectlError(f"source: {path} is not a HF checkpoint directory (no config.json)")
        return path
    target = cache_dir() / "checkpoints" / "smollm2-135m-instruct"
    with _build_lock(target, progress):
        if not (target / "config.json").is_file():
            progress("converting the embedded SmolLM2 GGUF to a HF checkpoint")
            hf_checkpoint_from_gguf(embedded_gguf_path(), target, recipe.eos_token)
    return target


def _serving_ids(checkpoint: Path) -> ServingIds:
    config = json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))
    end_id = config.get("eos_token_id")
    end_id = end_id[0] if isinstance(end_id, list) else end_id
    pad_id = config.get("pad_token_id")
    if end_id is None:
        raise EdgectlError(
            f"{checkpoint}/config.json has no eos_token_id; set eos_token in the recipe"
        )
    return ServingIds(end_id=int(end_id), pad_id=int(end_id if pad_id is None else pad_id))


def _hashed_files(folder: Path) -> dict[str, ArtifactFile]:
    """Every artifact file (recursively) with its size and hash; logs are not artifacts."""
    return {
        str(path.relative_to(folder)): ArtifactFile(
            bytes=path.stat().st_size, sha256=sha256_file(path)
        )
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.suffix != ".log" and "model_repository" not in path.parts
    }


def _build_atomically(
    recipe: Recipe,
    target: Path,
    force: bool,
    progress: Progress,
    produce: Producer,
) -> BuildResult:
    """Run ``produce(checkpoint, partial_dir, progress)`` and publish its folder only when complete.

    ``produce`` returns the target-specific manifest fields; the common ones (recipe,
    source hashes, tool versions, artifact hashes) are added here.
    """
    with _build_lock(target, progress):
        if target.is_dir() and not force:
            manifest = read_manifest(target)
            same_builder = manifest.builder_version == BUILDER_VERSION
            if same_builder and manifest.recipe == recipe.model_dump():
                return BuildResult(target, manifest, reused=True)
        return _build_unlocked(recipe, target, progress, produce)


@contextlib.contextmanager
def _build_lock(target: Path, progress: Progress):
    """One build of a target at a time: a second one waits, then reuses the first's result."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.with_name(target.name + ".lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"another build of {target.name} is running; waiting for it")
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def build_log_path(target: Path) -> Path:
    """Where a target's library output goes (kept beside the artifact, appended per build)."""
    return target.with_name(target.name + ".build.log")


def _build_unlocked(
    recipe: Recipe, target: Path, progress: Progress, produce: Producer
) -> BuildResult:
    log_path = build_log_path(target)
    try:
        with library_output_to(log_path, progress) as say:
            return _build_logged(recipe, target, say, produce)
    except Exception as err:
        if isinstance(err, EdgectlError):
            raise
        raise EdgectlError(
            f"building {target.name} failed: {type(err).__name__}: {err} "
            f"(library output in {log_path})"
        ) from err


def _build_logged(
    recipe: Recipe, target: Path, progress: Progress, produce: Producer
) -> BuildResult:
    started = time.monotonic()
    checkpoint = source_checkpoint(recipe, progress)
    check_against_model(recipe, json.loads((checkpoint / "config.json").read_text("utf-8")))
    with staged_directory(target) as partial:
        fields = produce(checkpoint, partial, progress)
        progress("hashing artifacts and writing the manifest")
        manifest = Manifest(
            builder_version=BUILDER_VERSION,
            recipe=recipe.model_dump(),
            **fields,
            source=SourceInfo(
                checkpoint=str(checkpoint),
                weights_sha256={
                    p.name: sha256_file(p) for p in sorted(checkpoint.glob("*.safetensors"))
                },
            ),
            serving=_serving_ids(checkpoint),
            build_tools=tool_versions(BUILD_TOOLS),
            artifacts=_hashed_files(partial),
            build_seconds=round(time.monotonic() - started, 1),
        )
        write_manifest(partial, manifest)
    return BuildResult(target, manifest, reused=False)


def build(
    recipe: Recipe,
    out: Path | None = None,
    force: bool = False,
    progress: Progress = lambda message: None,
) -> BuildResult:
    """Build the recipe's CPU artifact (reused when already built from the same recipe)."""

    def produce(checkpoint: Path, partial: Path, progress: Progress) -> dict:
        from edgectl.build.cpu import export_openvino

        progress(f"exporting the {recipe.precision.weights} OpenVINO model (NNCF)")
        quantization = export_openvino(recipe, checkpoint, partial, progress)
        return {
            "engine": "openvino_continuous_batching",
            "quantization": quantization,
            "runtime_tools": tool_versions(RUNTIME_TOOLS),
        }

    return _build_atomically(recipe, artifact_dir(recipe, out), force, progress, produce)


def trtllm_dir(recipe: Recipe, out: Path | None = None) -> Path:
    return (out or cache_dir() / "models") / f"{recipe.name}.trtllm"


def build_trtllm(
    recipe: Recipe,
    out: Path | None = None,
    force: bool = False,
    progress: Progress = lambda message: None,
) -> BuildResult:
    """TensorRT-LLM checkpoint (modelopt, on CPU) + the engine build, run or planned."""
    from edgectl.build.trtllm.checkpoint import write_checkpoint
    from edgectl.build.trtllm.plan import CHECKPOINT_DIR, plan_engine_build
    from edgectl.build.trtllm.repository import copy_tokenizer, render_trtllm_repository

    final = trtllm_dir(recipe, out)
    if recipe.trtllm.runtime == "llmapi":
        return _build_atomically(recipe, final, force, progress, _llmapi_producer(recipe, final))

    def produce(checkpoint: Path, partial: Path, progress: Progress) -> dict:
        quantization = write_checkpoint(recipe, checkpoint, partial / CHECKPOINT_DIR, progress)
        copy_tokenizer(checkpoint, partial / "tokenizer")
        progress("writing the trtllm-build plan")
        plan = plan_engine_build(recipe, partial)
        render_trtllm_repository(recipe, partial, final, _serving_ids(checkpoint))
        return {
            "engine": "tensorrt_llm",
            "quantization": quantization,
            "engine_build": EngineBuild(
                command=plan.command,
                status="built" if plan.ran else "pending: needs a GPU node with TensorRT-LLM",
                image=recipe.trtllm.image,
            ),
            "runtime_tools": {"tensorrt_llm": tool_versions(("tensorrt-llm",))["tensorrt-llm"]},
        }

    return _build_atomically(recipe, final, force, progress, produce)


def _llmapi_producer(recipe: Recipe, final: Path):
    """NVIDIA's LLM-API deployment: the float checkpoint and model.yaml, no engine build."""
    from edgectl.build.trtllm.repository import (
        HF_CHECKPOINT_DIR,
        copy_tokenizer,
        render_llmapi_repository,
    )

    def produce(checkpoint: Path, partial: Path, progress: Progress) -> dict:
        progress("copying the checkpoint the LLM API loads (no engine build)")
        shutil.copytree(checkpoint, partial / HF_CHECKPOINT_DIR)
        copy_tokenizer(checkpoint, partial / "tokenizer")
        render_llmapi_repository(recipe, partial, final)
        return {
            "engine": "tensorrt_llm",
            "quantization": {"weights": recipe.precision.weights},
            "engine_build": EngineBuild(
                command=[],
                status="not needed: the LLM API loads the checkpoint at model load",
                image=recipe.trtllm.image,
            ),
            "runtime_tools": {"tensorrt_llm": tool_versions(("tensorrt-llm",))["tensorrt-llm"]},
        }

    return produce


def build_targets(
    recipe: Recipe,
    targets: list[str] | None = None,
    out: Path | None = None,
    force: bool = False,
    progress: Progress = lambda message: None,
) -> dict[str, BuildResult]:
    """Build each requested target of the recipe (default: all it lists)."""
    chosen = targets or list(recipe.targets)
    unknown = [t for t in chosen if t not in recipe.targets]
    if unknown:
        raise EdgectlError(
            f"--target {', '.join(unknown)}: recipe {recipe.name} lists targets {recipe.targets}"
        )
    builders = {"cpu": build, "trtllm": build_trtllm}
    return {t: builders[t](recipe, out=out, force=force, progress=progress) for t in chosen}
