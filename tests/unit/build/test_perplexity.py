from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from edgectl.build.quality.perplexity import (
    interleaved_speeds,
    mean_nll,
    openvino_window_nll,
    perplexity_of,
    token_windows,
)
from edgectl.errors import EdgectlError

VOCAB = 16


def test_windows_are_consecutive_and_the_tail_is_dropped():
    ids = list(range(10))
    assert token_windows(ids, 4) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert token_windows(ids, 3, max_windows=2) == [[0, 1, 2], [3, 4, 5]]


def test_too_short_text_or_window_is_refused():
    with pytest.raises(EdgectlError, match="fewer than one 8-window"):
        token_windows([1, 2, 3], 8)
    with pytest.raises(EdgectlError, match="window: must be >= 2"):
        token_windows([1, 2, 3], 1)


def test_uniform_logits_give_log_vocab():
    assert mean_nll(np.zeros((5, VOCAB)), [1, 2, 3, 4, 5]) == pytest.approx(math.log(VOCAB))


def test_nll_scores_the_next_token():
    ids = [3, 7, 1]
    logits = np.full((3, VOCAB), -20.0)
    logits[0, 7] = logits[1, 1] = 20.0  # position i predicts ids[i + 1]
    assert mean_nll(logits, ids) < 1e-6
    logits[1, 1], logits[1, 2] = -20.0, 20.0  # second prediction now wrong
    assert mean_nll(logits, ids) == pytest.approx(20.0, abs=0.1)


def test_perplexity_is_exp_of_the_mean_window_nll():
    result = perplexity_of([[1, 2, 3], [4, 5, 6]], lambda ids: 1.0 if ids[0] == 1 else 3.0)
    assert result.value == pytest.approx(math.exp(2.0))
    assert (result.tokens, result.windows) == (4, 2)
    assert result.relative_stderr == pytest.approx(1.0)  # stdev 1.414 / sqrt(2)


def _next_token_model(path):
    """A real OpenVINO IR with the exported LLM's inputs whose logits predict id + 1."""
    import openvino as ov
    import openvino.opset13 as ops

    input_ids = ops.parameter([-1, -1], np.int64, name="input_ids")
    extra = [
        ops.parameter([-1, -1], np.int64, name="attention_mask"),
        ops.parameter([-1, -1], np.int64, name="position_ids"),
        ops.parameter([-1], np.int32, name="beam_idx"),
    ]
    table = np.full((VOCAB, VOCAB), -10.0, dtype=np.float32)
    table[np.arange(VOCAB), (np.arange(VOCAB) + 1) % VOCAB] = 10.0
    logits = ops.gather(ops.constant(table), input_ids, ops.constant(np.int64(0)))
    logits.output(0).get_tensor().set_names({"logits"})
    ov.save_model(
        ov.Model([logits], [input_ids, *extra], "next_token"), path / "openvino_model.xml"
    )


def test_openvino_scoring_runs_the_ir(tmp_path):
    _next_token_model(tmp_path)
    score = openvino_window_nll(tmp_path)
    assert score([0, 1, 2, 3, 4, 5]) < 1e-3  # exactly the model's prediction
    assert score([5, 3, 9, 0, 12, 7]) > 15.0  # every prediction wrong
    # Same windows, same numbers: deterministic.
    windows = token_windows(list(range(VOCAB)) * 4, 8)
    assert perplexity_of(windows, score).value == perplexity_of(windows, score).value


def test_speeds_are_measured_round_robin_and_take_the_median():
    calls: list[str] = []
    rates = {"a": iter([10.0, 30.0, 20.0]), "b": iter([5.0, 1.0, 3.0])}

    def rate(model_dir):
        calls.append(model_dir.name)
        return next(rates[model_dir.name])

    speeds = interleaved_speeds([Path("a"), Path("b")], rounds=3, rate=rate)
    assert calls == ["a", "b", "a", "b", "a", "b"]  # load spikes hit both alike
    assert speeds == [20.0, 3.0]


def test_peak_rss_is_the_childs_own_not_its_parents() -> None:
    """A serving probe's peak memory must not inherit the (large) report process's peak."""
    import subprocess
    import sys

    import numpy as np

    from edgectl.build.quality.serving_probe import peak_rss_bytes

    ballast = np.ones(300 * 2**20 // 8)  # 300 MiB resident in this process
    assert peak_rss_bytes() > ballast.nbytes
    code = "from edgectl.build.quality.serving_probe import peak_rss_bytes; print(peak_rss_bytes())"
    child = int(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
    )
    assert 0 < child < ballast.nbytes
