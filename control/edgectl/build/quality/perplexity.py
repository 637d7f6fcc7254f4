"""Quality and speed of a built CPU artifact: held-out perplexity and single-stream tok/s.

Both run the artifact's own IR with the OpenVINO runtime settings the engine step uses
(``INFERENCE_PRECISION_HINT=f32``), so quantization error shows up as it would when served.
Perplexity uses fixed, non-overlapping windows of the shipped held-out text: deterministic,
and each window starts from an empty KV cache.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from edgectl.build.calibration import DATA_DIR
from edgectl.errors import EdgectlError

HELDOUT = DATA_DIR / "heldout.txt"
RUNTIME_CONFIG = {"INFERENCE_PRECISION_HINT": "f32"}
SPEED_PROMPT = (
    "Write a short, friendly note to a neighbour explaining that the garden hose on the "
    "shared wall has a slow leak and suggesting a time to fix it together."
)

# (window of token ids) -> the mean negative log-likelihood of tokens 1..n-1 (nats).
WindowNll = Callable[[Sequence[int]], float]


@dataclass
class Perplexity:
    value: float
    tokens: int  # tokens scored (window length - 1 per window)
    windows: int
    window_nll: list[float]  # mean NLL of each window, for a stability estimate

    @property
    def relative_stderr(self) -> float:
        """Standard error of the mean NLL across windows, as a relative error of the ppl."""
        if len(self.window_nll) < 2:
            return float("nan")
        return statistics.stdev(self.window_nll) / math.sqrt(len(self.window_nll))


def token_windows(
    ids: Sequence[int], window: int, max_windows: int | None = None
) -> list[list[int]]:
    """Consecutive non-overlapping windows of exactly ``window`` ids (the tail is dropped)."""
    if window < 2:
        raise EdgectlError(f"perplexity window: must be >= 2 tokens, got {window}")
    count = len(ids) // window
    if count == 0:
        raise EdgectlError(f"held-out text has {len(ids)} tokens, fewer than one {window}-window")
    if max_windows is not None:
        count = min(count, max_windows)
    return [list(ids[i * window : (i + 1) * window]) for i in range(count)]


def perplexity_of(windows: list[list[int]], window_nll: WindowNll) -> Perplexity:
    """exp(mean NLL over every scored token); windows have equal length, so equal weights."""
    nll = [window_nll(ids) for ids in windows]
    return Perplexity(
        value=math.exp(statistics.fmean(nll)),
        tokens=sum(len(ids) - 1 for ids in windows),
        windows=len(windows),
        window_nll=nll,
    )


def mean_nll(logits, ids: Sequence[int]) -> float:
    """Mean NLL of ``ids[1:]`` given ``logits`` [n, vocab] for positions 0..n-2.

    Shifted by the row maximum, so float32 exp is exact enough; sums are float64.
    """
    import numpy as np

    scores = np.asarray(logits[: len(ids) - 1])
    top = scores.max(axis=-1, keepdims=True)
    shifted = np.exp(scores - top)
    log_norm = top[:, 0].astype(np.float64) + np.log(shifted.sum(axis=-1, dtype=np.float64))
    targets = np.asarray(ids[1:])
    picked = scores[np.arange(len(targets)), targets].astype(np.float64)
    return float((log_norm - picked).mean())


def openvino_window_nll(model_dir: Path) -> WindowNll:
    """Score windows with the artifact's stateful IR (KV state reset before each window)."""
    import numpy as np
    import openvino as ov

    compiled = ov.Core().compile_model(str(model_dir / "openvino_model.xml"), "CPU", RUNTIME_CONFIG)
    request = compiled.create_infer_request()
    names = {port.get_any_name() for port in compiled.inputs}

    def score(ids: Sequence[int]) -> float:
        tokens = np.asarray([ids], dtype=np.int64)
        inputs = {
            "input_ids": tokens,
            "attention_mask": np.ones_like(tokens),
            "position_ids": np.arange(len(ids), dtype=np.int64)[None, :],
            "beam_idx": np.zeros(1, dtype=np.int32),
        }
        request.reset_state()
        request.infer({key: value for key, value in inputs.items() if key in names})
        return mean_nll(request.get_tensor("logits").data[0], ids)

    return score


def heldout_ids(model_dir: Path, text_path: Path = HELDOUT) -> list[int]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    text = text_path.read_text(encoding="utf-8")
    return tokenizer.encode(text, add_special_tokens=False).ids


def artifact_perplexity(
    model_dir: Path, window: int = 512, max_windows: int | None = None, text_path: Path = HELDOUT
) -> Perplexity:
    """Perplexity of the OpenVINO model in ``model_dir`` on the held-out text."""
    windows = token_windows(heldout_ids(model_dir, text_path), window, max_windows)
    return perplexity_of(windows, openvino_window_nll(model_dir))


def _speed_pipeline(model_dir: Path):
    """The engine's pipeline for one stream (prefix caching off: every run pays its prefill)."""
    from edgectl.runtime.openvino_engine import SchedulerSettings, create_pipeline

    settings = SchedulerSettings(
        enable_prefix_caching=False,
        inference_precision=RUNTIME_CONFIG["INFERENCE_PRECISION_HINT"],
    )
    return create_pipeline(model_dir, settings)


def single_stream_rate(model_dir: Path, new_tokens: int = 128) -> float:
    """New tokens / wall time of one greedy generate() (after one warm-up, excluded)."""
    import numpy as np
    import openvino as ov
    import openvino_genai as og

    from edgectl.runtime.openvino_engine import load_tokenizer

    pipeline = _speed_pipeline(model_dir)
    ids = load_tokenizer(model_dir).encode(SPEED_PROMPT, add_special_tokens=False).ids
    prompt = ov.Tensor(np.asarray([ids], dtype=np.int64))
    config = og.GenerationConfig()
    config.max_new_tokens = new_tokens
    config.ignore_eos = True  # every run generates exactly new_tokens
    pipeline.generate([prompt], [config])  # warm-up
    started = time.perf_counter()
    result = pipeline.generate([prompt], [config])[0]
    elapsed = time.perf_counter() - started
    produced = len(result.m_generation_ids[0])
    if produced != new_tokens:
        raise EdgectlError(f"{model_dir}: generated {produced} tokens, expected {new_tokens}")
    return produced / elapsed


def interleaved_speeds(
    model_dirs: list[Path],
    rounds: int = 3,
    rate: Callable[[Path], float] = single_stream_rate,
    progress: Callable[[str], None] = lambda message: None,
) -> list[float]:
    """Median single-stream tok/s of each model, measured round-robin.

    One model after another, ``rounds`` times: load that comes and goes on a shared machine
    hits every model alike instead of whichever happened to be measured at that moment.
    """
    runs: list[list[float]] = [[] for _ in model_dirs]
    for number in range(rounds):
        progress(f"single-stream tok/s, round {number + 1}/{rounds}")
        for index, model_dir in enumerate(model_dirs):
            runs[index].append(rate(model_dir))
    return [statistics.median(values) for values in runs]
