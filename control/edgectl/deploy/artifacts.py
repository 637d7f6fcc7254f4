"""Which built artifact a configured model serves, resolved for the engine the config names."""

from __future__ import annotations

from pathlib import Path

from edgectl.build.builder import artifact_dir, trtllm_dir
from edgectl.build.recipe import Recipe, load_recipe
from edgectl.config import EdgectlConfig, ModelConfig
from edgectl.deploy.repository import ServedModel
from edgectl.errors import EdgectlError
from edgectl.runtime.manifest import read_manifest

# The engine each config value serves, as the builder records it in the manifest.
MANIFEST_ENGINES = {"cpu": "openvino_continuous_batching", "trtllm": "tensorrt_llm"}


def _default_artifact(model: ModelConfig) -> Path:
    recipe: Recipe = load_recipe(model.recipe)
    return trtllm_dir(recipe) if model.engine == "trtllm" else artifact_dir(recipe)


def served_model(config: EdgectlConfig) -> ServedModel:
    """The configured model, resolved to its built artifact for ``model.engine``.

    Refuses an artifact built for the other engine (a TensorRT-LLM config must never point
    at the CPU model, nor the reverse) and a missing build, naming what to run.
    """
    model = config.model
    target = "trtllm" if model.engine == "trtllm" else "cpu"
    artifact = model.artifact if model.artifact is not None else _default_artifact(model)
    artifact = Path(artifact).expanduser().resolve()
    if not artifact.is_dir():
        raise EdgectlError(
            f"model.artifact {artifact} does not exist; "
            f"build it with `edgectl build {model.recipe} --target {target}`"
        )
    manifest = read_manifest(artifact)
    expected = MANIFEST_ENGINES[model.engine]
    if manifest.engine != expected:
        raise EdgectlError(
            f"model.engine is {model.engine!r} but {artifact} was built for {manifest.engine}; "
            f"point model.artifact at a {target} build or set model.engine to match"
        )
    if manifest.serving is None:
        raise EdgectlError(f"{artifact}/manifest.json records no end/pad ids; rebuild it")
    if model.engine == "trtllm":
        engine_dir, tokenizer_dir = artifact / "engine", artifact / "tokenizer"
    else:
        engine_dir = tokenizer_dir = artifact
    return ServedModel(
        name=model.name,
        engine=model.engine,
        engine_dir=engine_dir,
        tokenizer_dir=tokenizer_dir,
        end_id=manifest.serving.end_id,
        pad_id=manifest.serving.pad_id,
    )
