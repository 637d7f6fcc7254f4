"""Calibration text for data-aware quantization (AWQ, GPTQ, scale estimation, SmoothQuant).

The samples are windows cut from a text file the project ships (no downloads), chosen by a
seeded generator, so the same recipe always calibrates on the same text.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgectl.errors import EdgectlError
from edgectl.resources import recipes_dir

DATA_DIR = recipes_dir() / "data"
BUILTIN_PREFIX = "builtin:"
# Without a tokenizer, English BPE text averages about 4 characters a token.
CHARS_PER_TOKEN = 4

# (text) -> the (start, end) character span of every token, in order.
TokenSpans = Callable[[str], list[tuple[int, int]]]


def dataset_path(dataset: str) -> Path:
    """``builtin:NAME`` -> ``build/data/NAME.txt``; anything else is a path to a .txt file."""
    if dataset.startswith(BUILTIN_PREFIX):
        path = DATA_DIR / f"{dataset[len(BUILTIN_PREFIX) :]}.txt"
    else:
        path = Path(dataset).expanduser()
    if not path.is_file():
        raise EdgectlError(f"calibration.dataset: {dataset!r} -> {path} is not a file")
    return path


def tokenizer_spans(tokenizer_json: Path) -> TokenSpans:
    """Token spans from a HF ``tokenizer.json`` (the ``tokenizers`` library: light)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    return lambda text: tokenizer.encode(text, add_special_tokens=False).offsets


def _approximate_spans(text: str) -> list[tuple[int, int]]:
    return [(i, min(i + CHARS_PER_TOKEN, len(text))) for i in range(0, len(text), CHARS_PER_TOKEN)]


def _word_start(text: str, index: int) -> int:
    """Move ``index`` forward to the start of the next word (samples never begin mid-word)."""
    while 0 < index < len(text) and not text[index - 1].isspace():
        index += 1
    while index < len(text) and text[index].isspace():
        index += 1
    return index


def sample_windows(
    text: str, samples: int, seq_len: int, seed: int, spans: TokenSpans | None = None
) -> list[str]:
    """``samples`` windows of about ``seq_len`` tokens at seeded random word-aligned offsets."""
    if samples < 1:
        raise EdgectlError(f"calibration.samples: must be >= 1, got {samples}")
    if seq_len < 8:
        raise EdgectlError(f"calibration.seq_len: must be >= 8, got {seq_len}")
    token_spans = (spans or _approximate_spans)(text)
    if len(token_spans) < seq_len + 1:
        raise EdgectlError(
            f"calibration.seq_len: {seq_len} tokens is longer than the dataset "
            f"({len(token_spans)} tokens)"
        )
    starts = [start for start, _ in token_spans]
    rng = random.Random(seed)
    windows = []
    for _ in range(samples):
        first = rng.randrange(0, len(token_spans) - seq_len)
        begin = _word_start(text, starts[first])
        # The window's end: the token seq_len after the (word-aligned) beginning.
        first = bisect.bisect_left(starts, begin)
        last = min(first + seq_len, len(token_spans)) - 1
        windows.append(text[begin : token_spans[last][1]].strip())
    return windows


def calibration_texts(calibration: Any, spans: TokenSpans | None = None) -> list[str]:
    """The recipe's calibration samples (``calibration.mode == "none"`` -> no samples).

    ``calibration`` has ``mode``, ``dataset``, ``samples``, ``seq_len``, ``seed``; pass
    ``spans`` (see :func:`tokenizer_spans`) to cut windows of exactly ``seq_len`` tokens.
    """
    if calibration is None or calibration.mode == "none":
        return []
    text = dataset_path(calibration.dataset).read_text(encoding="utf-8")
    return sample_windows(text, calibration.samples, calibration.seq_len, calibration.seed, spans)
