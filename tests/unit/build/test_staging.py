"""Builds publish their folder only when complete; an interrupted one leaves nothing behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgectl.build import builder
from edgectl.build.recipe import Recipe
from edgectl.staging import staged_directory


def test_a_completed_stage_replaces_the_target(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.bin").write_text("old")
    with staged_directory(target) as partial:
        partial.mkdir()
        (partial / "new.bin").write_text("new")
        assert not (target / "new.bin").exists()  # nothing visible until the end
    assert sorted(p.name for p in target.iterdir()) == ["new.bin"]
    assert not partial.exists()


@pytest.mark.parametrize("interruption", [KeyboardInterrupt, RuntimeError])
def test_an_interrupted_stage_keeps_the_old_target_and_drops_the_partial(tmp_path, interruption):
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.bin").write_text("old")
    with pytest.raises(interruption), staged_directory(target) as partial:
        partial.mkdir()
        (partial / "half.bin").write_text("half")
        raise interruption()
    assert sorted(p.name for p in target.iterdir()) == ["old.bin"]
    assert not partial.exists()


def fake_checkpoint(folder: Path) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps(
            {
                "hidden_size": 64,
                "intermediate_size": 128,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "eos_token_id": 2,
            }
        )
    )
    return folder


def test_an_interrupted_build_leaves_no_artifact_and_a_finished_one_is_reused(tmp_path):
    recipe = Recipe(name="tiny", source=str(fake_checkpoint(tmp_path / "ckpt")))
    target = tmp_path / "out" / "tiny"
    calls = []

    def interrupted(checkpoint: Path, partial: Path) -> dict:
        partial.mkdir()
        (partial / "openvino_model.bin").write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        builder._build_atomically(recipe, target, False, calls.append, interrupted)
    assert not target.exists()
    assert not target.with_name("tiny.partial").exists()

    def complete(checkpoint: Path, partial: Path) -> dict:
        partial.mkdir()
        (partial / "openvino_model.bin").write_bytes(b"weights")
        return {"engine": "test"}

    first = builder._build_atomically(recipe, target, False, calls.append, complete)
    assert not first.reused
    assert first.manifest["artifacts"]["openvino_model.bin"]["bytes"] == 7
    assert first.manifest["serving"] == {"end_id": 2, "pad_id": 2}
    again = builder._build_atomically(recipe, target, False, calls.append, interrupted)
    assert again.reused  # same recipe and builder version: nothing rebuilt
    changed = recipe.model_copy(update={"description": "changed"})
    with pytest.raises(KeyboardInterrupt):
        builder._build_atomically(changed, target, False, calls.append, interrupted)
    assert (target / "openvino_model.bin").read_bytes() == b"weights"  # old one kept
