"""Speculative-decoding settings, draft checks, refusals and acceptance counting."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edgectl.config import load_config
from edgectl.errors import EdgectlError
from edgectl.runtime.contract import InvalidRequest
from edgectl.runtime.speculative import (
    Speculation,
    SpeculativeSettings,
    check_draft,
    pipeline_properties,
    refuse_unsupported,
    refuse_unsupported_inputs,
)

LOOKUP = SpeculativeSettings(mode="prompt_lookup", num_assistant_tokens=4, max_ngram_size=2)


def model_dir(root: Path, vocab: dict[str, int]) -> Path:
    root.mkdir()
    (root / "openvino_model.xml").write_text("<net/>", encoding="utf-8")
    tokenizer = {"model": {"type": "BPE", "vocab": vocab, "merges": []}, "added_tokens": []}
    (root / "tokenizer.json").write_text(json.dumps(tokenizer), encoding="utf-8")
    return root


def test_unknown_mode_is_a_config_error_naming_the_key() -> None:
    with pytest.raises(EdgectlError, match="engine.speculative.mode"):
        load_config(None, ("engine.speculative.mode=medusa",))


def test_draft_mode_needs_an_existing_draft(tmp_path: Path) -> None:
    with pytest.raises(EdgectlError, match="engine.speculative.*needs draft"):
        load_config(None, ("engine.speculative.mode=draft",))
    with pytest.raises(EdgectlError, match="is not a built CPU model folder"):
        load_config(
            None, ("engine.speculative.mode=draft", f"engine.speculative.draft={tmp_path}/none")
        )


def test_draft_with_another_tokenizer_is_refused_naming_both(tmp_path: Path) -> None:
    target = model_dir(tmp_path / "target", {"a": 0, "b": 1})
    draft = model_dir(tmp_path / "draft", {"a": 0, "c": 1})
    with pytest.raises(RuntimeError, match=f"{draft}.*different tokenizer.*{target}"):
        check_draft(target, draft)
    check_draft(target, model_dir(tmp_path / "same", {"a": 0, "b": 1}))


def test_modes_set_pipeline_properties_and_request_settings() -> None:
    assert pipeline_properties(SpeculativeSettings(), Path("."), "f32") == {}
    properties = pipeline_properties(LOOKUP, Path("."), "f32")
    assert properties == {"prompt_lookup": True, "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}
    config = SimpleNamespace()
    Speculation(LOOKUP).configure(config)
    assert (config.num_assistant_tokens, config.max_ngram_size) == (4, 2)


def test_parameters_round_trip_and_bad_mode_fails_at_load() -> None:
    params = {"speculative_mode": "prompt_lookup", "num_assistant_tokens": "4"}
    assert SpeculativeSettings.from_parameters(params).num_assistant_tokens == 4
    assert not SpeculativeSettings.from_parameters({}).enabled
    with pytest.raises(ValueError, match="speculative_mode must be one of"):
        SpeculativeSettings.from_parameters({"speculative_mode": "eagle"})


def test_beams_and_several_sequences_are_refused_only_when_speculating() -> None:
    refuse_unsupported(SpeculativeSettings(), beam_width=4, n=2)
    with pytest.raises(InvalidRequest, match="beam_width must be 1 .* got 4"):
        refuse_unsupported(LOOKUP, beam_width=4, n=1)
    with pytest.raises(InvalidRequest, match="num_return_sequences must be 1 .* got 3"):
        refuse_unsupported(LOOKUP, beam_width=1, n=3)


def test_acceptance_counts_drafts_per_step_and_kept_tokens() -> None:
    speculation = Speculation(LOOKUP)
    speculation.record(0, 1, max_new_tokens=20)  # the prompt pass: no drafts
    speculation.record(1, 5, max_new_tokens=20)  # 4 drafted, 4 kept
    speculation.record(6, 1, max_new_tokens=20)  # 4 drafted, none kept
    speculation.record(17, 2, max_new_tokens=20)  # room for 2 drafts only, 1 kept
    stats = speculation.stats
    assert (stats.total_draft_tokens, stats.total_accepted_draft_tokens) == (10, 5)
    assert stats.as_dict()["acceptance_rate"] == pytest.approx(0.5)


def test_engine_step_inputs_are_checked_row_by_row() -> None:
    def lookup_of(**tensors):
        return lambda name: tensors.get(name)

    refuse_unsupported_inputs(LOOKUP, lookup_of())
    refuse_unsupported_inputs(LOOKUP, lookup_of(beam_width=np.asarray([1, 1], np.int32)))
    with pytest.raises(InvalidRequest, match="beam_width must be 1 .* got 2"):
        refuse_unsupported_inputs(LOOKUP, lookup_of(beam_width=np.asarray([1, 2], np.int32)))
    with pytest.raises(InvalidRequest, match="num_return_sequences must be 1 .* got 3"):
        refuse_unsupported_inputs(
            LOOKUP, lookup_of(num_return_sequences=np.asarray([[3]], np.int32))
        )
    refuse_unsupported_inputs(
        SpeculativeSettings(), lookup_of(beam_width=np.asarray([4], np.int32))
    )
