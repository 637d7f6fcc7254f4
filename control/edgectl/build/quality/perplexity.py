"""Quality and speed of a built CPU artifact: held-out perplexity and tok/s.

Both run the artifact's own IR with the OpenVINO runtime settings the engine step uses
(``INFERENCE_PRECISION_HINT=f32`` plus the row's load-time settings: dynamic activation
quantization and KV-cache precision), so quantization error shows up as it would when
served. Perplexity uses fixed, non-overlapping windows of the shipped held-out text:
deterministic, each window starts from an empty KV cache and is fed in chunks, so later
tokens read earlier ones back from the (possibly u8) KV cache as they do when generating.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from edgectl.build.calibration import DATA_DIR
from edgectl.errors import EdgectlError

HELDOUT = DATA_DIR / "heldout.txt"
RUNTIME_CONFIG = {"INFERENCE_PRECISION_HINT": "f32"}
SCORE_CHUNK = 64  # tokens fed per inference when scoring a window
Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass(frozen=True)
class EngineSettings:
    """The CPU engine's load-time settings a measurement runs with (``engine.*`` keys)."""

    dynamic_quantization_group_size: int = 32  # 0: float activations
    kv_cache_precision: str | None = None  # None: the artifact's own (its recipe's)

    def scheduler(self, **fields: Any):
        """The engine's own ``SchedulerSettings`` with these values (f32 inference)."""
        from edgectl.runtime.openvino_engine import SchedulerSettings

        return SchedulerSettings(
            inference_precision=RUNTIME_CONFIG["INFERENCE_PRECISION_HINT"],
            dynamic_quantization_group_size=self.dynamic_quantization_group_size,
            kv_cache_precision=self.kv_cache_precision,
            **fields,
        )

    def plugin_properties(self) -> dict[str, object]:
        from edgectl.runtime.openvino_engine import plugin_properties

        return plugin_properties(self.scheduler())


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


def openvino_window_nll(
    model_dir: Path, settings: EngineSettings = EngineSettings(), chunk: int = SCORE_CHUNK
) -> WindowNll:
    """Score windows with the artifact's stateful IR (KV state reset before each window),
    ``chunk`` tokens per inference so each chunk attends to the cached earlier ones."""
    import numpy as np
    import openvino as ov

    xml = str(model_dir / "openvino_model.xml")
    compiled = ov.Core().compile_model(xml, "CPU", settings.plugin_properties())
    request = compiled.create_infer_request()
    names = {port.get_any_name() for port in compiled.inputs}

    def score(ids: Sequence[int]) -> float:
        request.reset_state()
        logits = []
        for start in range(0, len(ids), chunk):
            tokens = np.asarray([ids[start : start + chunk]], dtype=np.int64)
            end = start + tokens.shape[1]
            inputs = {
                "input_ids": tokens,
                "attention_mask": np.ones((1, end), dtype=np.int64),
                "position_ids": np.arange(start, end, dtype=np.int64)[None, :],
                "beam_idx": np.zeros(1, dtype=np.int32),
            }
            request.infer({key: value for key, value in inputs.items() if key in names})
            logits.append(request.get_tensor("logits").data[0].copy())
        return mean_nll(np.concatenate(logits), ids)

    return score


def heldout_ids(model_dir: Path, text_path: Path = HELDOUT) -> list[int]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    text = text_path.read_text(encoding="utf-8")
    return tokenizer.encode(text, add_special_tokens=False).ids


def artifact_perplexity(
    model_dir: Path,
    window: int = 512,
    max_windows: int | None = None,
    text_path: Path = HELDOUT,
    settings: EngineSettings = EngineSettings(),
) -> Perplexity:
    """Perplexity of the OpenVINO model in ``model_dir`` on the held-out text."""
    windows = token_windows(heldout_ids(model_dir, text_path), window, max_windows)
    return perplexity_of(windows, openvino_window_nll(model_dir, settings))


def generation_rate(pipeline: Any, model_dir: Path, streams: int, new_tokens: int = 128) -> float:
    """New tokens / wall time of one greedy generate() of ``streams`` prompts at once."""
    import numpy as np
    import openvino as ov
    import openvino_genai as og

    from edgectl.runtime.openvino_engine import load_tokenizer

    ids = load_tokenizer(model_dir).encode(SPEED_PROMPT, add_special_tokens=False).ids
    prompts = [ov.Tensor(np.asarray([ids], dtype=np.int64)) for _ in range(streams)]
    config = og.GenerationConfig()
    config.max_new_tokens = new_tokens
    config.ignore_eos = True  # every run generates exactly new_tokens
    started = time.perf_counter()
    results = pipeline.generate(prompts, [config] * streams)
    elapsed = time.perf_counter() - started
    produced = sum(len(result.m_generation_ids[0]) for result in results)
    if produced != new_tokens * streams:
        raise EdgectlError(f"{model_dir}: generated {produced} tokens, expected {new_tokens}")
    return produced / elapsed


def interleaved_runs(
    items: list[Item],
    rounds: int,
    run: Callable[[Item], Result],
    progress: Callable[[str], None] = lambda message: None,
) -> list[list[Result]]:
    """``run(item)`` for every item, ``rounds`` times, round-robin; all results per item.

    One item after another, ``rounds`` times: load that comes and goes on a shared machine
    hits every row alike instead of whichever happened to be measured at that moment.
    """
    runs: list[list[Result]] = [[] for _ in items]
    for number in range(rounds):
        progress(f"speed runs, round {number + 1}/{rounds}")
        for index, item in enumerate(items):
            runs[index].append(run(item))
    return runs


def interleaved_speeds(
    items: list[Item],
    rounds: int,
    rate: Callable[[Item], float],
    progress: Callable[[str], None] = lambda message: None,
) -> list[float]:
    """Median of ``rate(item)`` for each item, measured round-robin."""
    return [statistics.median(v) for v in interleaved_runs(items, rounds, rate, progress)]
