"""``served_model`` resolves the artifact for the engine the config names, or refuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from edgectl.build.trtllm import TRTLLM_IMAGE
from edgectl.config import EdgectlConfig
from edgectl.deploy.artifacts import served_model
from edgectl.errors import EdgectlError
from tests.paths import REPO_ROOT


def artifact(folder: Path, engine: str) -> Path:
    folder.mkdir()
    manifest = {"engine": engine, "serving": {"end_id": 7, "pad_id": 3}}
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return folder


def config(path: Path, engine: str) -> EdgectlConfig:
    return EdgectlConfig.model_validate({"model": {"artifact": str(path), "engine": engine}})


def test_cpu_engine_serves_the_openvino_folder(tmp_path: Path) -> None:
    folder = artifact(tmp_path / "m", "openvino_continuous_batching")
    served = served_model(config(folder, "cpu"))
    assert (served.engine, served.engine_dir, served.tokenizer_dir) == ("cpu", folder, folder)
    assert (served.end_id, served.pad_id) == (7, 3)


def test_trtllm_engine_serves_the_engine_and_tokenizer_folders(tmp_path: Path) -> None:
    folder = artifact(tmp_path / "m.trtllm", "tensorrt_llm")
    served = served_model(config(folder, "trtllm"))
    assert served.engine == "trtllm"
    assert served.engine_dir == folder / "engine"
    assert served.tokenizer_dir == folder / "tokenizer"


@pytest.mark.parametrize(
    ("built", "asked"), [("openvino_continuous_batching", "trtllm"), ("tensorrt_llm", "cpu")]
)
def test_an_artifact_of_the_other_engine_is_refused(tmp_path: Path, built: str, asked: str) -> None:
    folder = artifact(tmp_path / "m", built)
    with pytest.raises(EdgectlError, match=f"model.engine is '{asked}' but .* built for {built}"):
        served_model(config(folder, asked))


def test_a_missing_build_names_the_command(tmp_path: Path) -> None:
    with pytest.raises(EdgectlError, match="--target trtllm"):
        served_model(config(tmp_path / "absent", "trtllm"))


def test_the_chart_uses_the_same_tensorrt_llm_container() -> None:
    values = yaml.safe_load((REPO_ROOT / "helm" / "values-gpu.yaml").read_text())
    images = [values["image"], values["modelRepository"]["engineBuild"]["image"]]
    for image in images:
        assert f"{image['repository']}:{image['tag']}" == TRTLLM_IMAGE
