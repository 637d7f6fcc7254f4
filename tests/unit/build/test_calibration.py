from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from edgectl.build.calibration import DATA_DIR, calibration_texts, dataset_path, sample_windows
from edgectl.errors import EdgectlError

TEXT = " ".join(f"word{i} is here." for i in range(400))


def calibration(**overrides):
    settings = {
        "mode": "static",
        "dataset": "builtin:calibration",
        "samples": 8,
        "seq_len": 64,
        "seed": 1234,
    }
    return SimpleNamespace(**(settings | overrides))


@pytest.fixture(scope="module")
def spans(bpe_model):
    return lambda text: bpe_model.encode(text).offsets


def test_builtin_dataset_is_the_shipped_file():
    assert dataset_path("builtin:calibration") == DATA_DIR / "calibration.txt"
    assert dataset_path("builtin:heldout") == DATA_DIR / "heldout.txt"


def test_missing_dataset_names_the_field(tmp_path):
    with pytest.raises(EdgectlError, match="calibration.dataset"):
        dataset_path(str(tmp_path / "nope.txt"))
    with pytest.raises(EdgectlError, match="calibration.dataset"):
        dataset_path("builtin:nope")


def test_samples_are_deterministic_and_seeded():
    first = calibration_texts(calibration())
    assert first == calibration_texts(calibration())
    assert first != calibration_texts(calibration(seed=7))
    assert len(first) == 8 and len(set(first)) > 1


def test_mode_none_means_no_samples():
    assert calibration_texts(calibration(mode="none")) == []
    assert calibration_texts(None) == []


def test_windows_have_seq_len_tokens_and_start_on_a_word(bpe_model, spans):
    windows = sample_windows(TEXT, samples=20, seq_len=40, seed=3, spans=spans)
    assert len(windows) == 20
    for window in windows:
        start = TEXT.index(window)
        assert start == 0 or TEXT[start - 1] == " ", window  # never starts mid-word
        assert 38 <= len(bpe_model.encode(window).ids) <= 41


def test_windows_without_tokenizer_approximate_four_chars_a_token():
    windows = sample_windows(TEXT, samples=5, seq_len=50, seed=1)
    assert all(150 <= len(window) <= 210 for window in windows)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"samples": 0}, "calibration.samples"), ({"seq_len": 4}, "calibration.seq_len")],
)
def test_bad_limits_name_the_field(kwargs, field):
    settings = {"samples": 4, "seq_len": 32, "seed": 0} | kwargs
    with pytest.raises(EdgectlError, match=field):
        sample_windows(TEXT, **settings)


def test_sequence_longer_than_the_dataset_is_refused():
    with pytest.raises(EdgectlError, match=r"calibration.seq_len: 5000 tokens is longer"):
        sample_windows("a short text " * 10, samples=1, seq_len=5000, seed=0)


def _shingles(path, size=8):
    words = re.findall(r"[a-z']+", path.read_text(encoding="utf-8").lower())
    return {tuple(words[i : i + size]) for i in range(len(words) - size)}


def test_shipped_texts_are_disjoint_and_large_enough():
    calibration_file, heldout_file = DATA_DIR / "calibration.txt", DATA_DIR / "heldout.txt"
    assert len(heldout_file.read_text(encoding="utf-8").split()) >= 12_000  # ~16k tokens
    assert len(calibration_file.read_text(encoding="utf-8").split()) >= 2_500
    # No 8-word run of the held-out text appears in the calibration text.
    assert not _shingles(calibration_file) & _shingles(heldout_file)
