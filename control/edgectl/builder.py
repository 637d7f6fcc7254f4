"""``edgectl build``: a recipe -> a served artifact in the cache, with a manifest.

Every output is written to a ``.partial`` sibling and renamed into place only when
complete, so an interrupted build never leaves an artifact a deploy would pick up.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from edgectl.checkpoint import embedded_gguf_path, hf_checkpoint_from_gguf
from edgectl.config import cache_dir
from edgectl.errors import EdgectlError
from edgectl.recipe import EMBEDDED_SOURCE, Recipe

MANIFEST = "manifest.json"
# Tool versions recorded in the manifest; the engine step refuses a mismatch at load time.
RUNTIME_TOOLS = ("openvino", "openvino-genai", "openvino-tokenizers")
BUILD_TOOLS = ("optimum-intel", "nncf", "transformers", "torch")

Progress = Callable[[str], None]


@dataclass
class BuildResult:
    artifact: Path
    manifest: dict
    reused: bool


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


def artifact_dir(recipe: Recipe, out: Path | None = None) -> Path:
    return (out or cache_dir() / "models") / recipe.name


def read_manifest(artifact: Path) -> dict:
    path = artifact / MANIFEST
    if not path.is_file():
        raise EdgectlError(
            f"{artifact} is not a built model (no {MANIFEST}); run `edgectl build RECIPE` first"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def source_checkpoint(recipe: Recipe, progress: Progress) -> Path:
    """The HF checkpoint a recipe starts from (the embedded one is converted once and cached)."""
    if recipe.source != EMBEDDED_SOURCE:
        path = Path(recipe.source)
        if not (path / "config.json").is_file():
            raise EdgectlError(f"source: {path} is not a HF checkpoint directory (no config.json)")
        return path
    target = cache_dir() / "checkpoints" / "smollm2-135m-instruct"
    if not (target / "config.json").is_file():
        progress("converting the embedded SmolLM2 GGUF to a HF checkpoint")
        target.parent.mkdir(parents=True, exist_ok=True)
        hf_checkpoint_from_gguf(embedded_gguf_path(), target, recipe.eos_token)
    return target


def _run_logged(command: list[str], log_path: Path) -> None:
    with log_path.open("w", encoding="utf-8") as log:
        result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        tail = "".join(log_path.read_text(encoding="utf-8").splitlines(True)[-20:])
        raise EdgectlError(f"{command[2]} failed (exit {result.returncode}); last lines:\n{tail}")


def export_openvino(recipe: Recipe, checkpoint: Path, out: Path) -> None:
    """optimum-intel's exporter: stateful OpenVINO IR + OpenVINO tokenizers, NNCF weights."""
    cpu = recipe.cpu
    command = [
        sys.executable, "-m", "optimum.commands.optimum_cli", "export", "openvino",
        "--model", str(checkpoint),
        "--task", "text-generation-with-past",
        "--weight-format", cpu.weight_format,
    ]  # fmt: skip
    if cpu.weight_format == "int4":
        command += ["--group-size", str(cpu.group_size), "--ratio", str(cpu.ratio)]
    command.append(str(out))
    out.mkdir(parents=True)
    _run_logged(command, out / "build.log")


def _serving_ids(checkpoint: Path) -> dict[str, int]:
    config = json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))
    end_id = config.get("eos_token_id")
    end_id = end_id[0] if isinstance(end_id, list) else end_id
    pad_id = config.get("pad_token_id")
    if end_id is None:
        raise EdgectlError(
            f"{checkpoint}/config.json has no eos_token_id; set eos_token in the recipe"
        )
    return {"end_id": int(end_id), "pad_id": int(end_id if pad_id is None else pad_id)}


def build(
    recipe: Recipe,
    out: Path | None = None,
    force: bool = False,
    progress: Progress = lambda message: None,
) -> BuildResult:
    """Build the recipe's CPU artifact (reused when already built from the same recipe)."""
    target = artifact_dir(recipe, out)
    if target.is_dir() and not force:
        manifest = read_manifest(target)
        if manifest.get("recipe") == recipe.model_dump():
            return BuildResult(target, manifest, reused=True)
    started = time.monotonic()
    checkpoint = source_checkpoint(recipe, progress)
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        progress(f"exporting {recipe.cpu.weight_format} OpenVINO model (optimum-intel + NNCF)")
        export_openvino(recipe, checkpoint, partial)
        progress("hashing artifacts and writing the manifest")
        files = {
            p.name: {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
            for p in sorted(partial.iterdir())
            if p.is_file() and p.name != "build.log"
        }
        weights = sorted(checkpoint.glob("*.safetensors"))
        manifest = {
            "recipe": recipe.model_dump(),
            "engine": "openvino_continuous_batching",
            "source": {
                "checkpoint": str(checkpoint),
                "weights_sha256": {p.name: sha256_file(p) for p in weights},
            },
            "serving": _serving_ids(checkpoint),
            "runtime_tools": tool_versions(RUNTIME_TOOLS),
            "build_tools": tool_versions(BUILD_TOOLS),
            "artifacts": files,
            "build_seconds": round(time.monotonic() - started, 1),
        }
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return BuildResult(target, manifest, reused=False)
