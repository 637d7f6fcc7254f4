"""Speculative decoding in the CPU engine step: prompt lookup or a draft model.

OpenVINO GenAI fixes the mode when the pipeline is built, so it is a deployment
setting, not a request field.  The target model verifies every drafted token, so
greedy output is unchanged provided verification computes the same numbers as plain
decoding: the CPU plugin's dynamic activation quantization rounds a multi-token pass
differently from a one-token pass, so it is switched off whenever a mode is on.

Counters follow TensorRT-LLM's names: ``total_draft_tokens`` (positions offered to the
target for verification, K per decoding step), ``total_accepted_draft_tokens`` (read
from the engine's output: a step that returns n tokens accepted n - 1 drafts) and
their ratio, ``acceptance_rate``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgectl.runtime.contract import InvalidRequest

MODES = ("none", "prompt_lookup", "draft")


@dataclass(frozen=True)
class SpeculativeSettings:
    mode: str = "none"
    num_assistant_tokens: int = 5
    max_ngram_size: int = 3
    draft_dir: str = ""

    @property
    def enabled(self) -> bool:
        return self.mode != "none"

    @classmethod
    def from_parameters(cls, params: dict[str, str]) -> SpeculativeSettings:
        """From the engine step's model-config parameters (absent keys: speculation off)."""
        settings = cls(
            mode=params.get("speculative_mode", "none") or "none",
            num_assistant_tokens=int(params.get("num_assistant_tokens", 5) or 5),
            max_ngram_size=int(params.get("max_ngram_size", 3) or 3),
            draft_dir=params.get("draft_dir", ""),
        )
        settings.check()
        return settings

    def check(self) -> None:
        if self.mode not in MODES:
            raise ValueError(
                f"speculative_mode must be one of {', '.join(MODES)}, got {self.mode!r}"
            )
        if self.num_assistant_tokens < 1 or self.max_ngram_size < 1:
            raise ValueError("num_assistant_tokens and max_ngram_size must be >= 1")
        if self.mode == "draft" and not self.draft_dir:
            raise ValueError("speculative_mode draft needs draft_dir")


def tokenizer_fingerprint(model_dir: Path) -> dict[str, Any]:
    """What must match for two models to share token ids: vocabulary, merges, specials."""
    data = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    model = data.get("model", {})
    return {
        "type": model.get("type"),
        "vocab": model.get("vocab"),
        "merges": model.get("merges"),
        "added": [(t.get("id"), t.get("content")) for t in data.get("added_tokens", [])],
    }


def check_draft(target_dir: Path, draft_dir: Path) -> None:
    """Refuse a draft the target cannot verify: drafted ids must mean the same text."""
    for name in ("openvino_model.xml", "tokenizer.json"):
        if not (draft_dir / name).is_file():
            raise RuntimeError(f"draft model {draft_dir} has no {name}")
    if tokenizer_fingerprint(target_dir) != tokenizer_fingerprint(draft_dir):
        raise RuntimeError(
            f"draft model {draft_dir} has a different tokenizer from the target {target_dir}; "
            "speculative decoding needs identical token ids"
        )


def pipeline_properties(settings: SpeculativeSettings, target_dir: Path, precision: str) -> dict:
    """Extra ``ContinuousBatchingPipeline`` properties for the mode (none: nothing)."""
    if not settings.enabled:
        return {}
    properties: dict[str, Any] = {"DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}
    if settings.mode == "prompt_lookup":
        properties["prompt_lookup"] = True
    else:
        import openvino_genai as og

        draft = Path(settings.draft_dir)
        check_draft(target_dir, draft)
        properties["draft_model"] = og.draft_model(
            str(draft),
            "CPU",
            INFERENCE_PRECISION_HINT=precision,
            DYNAMIC_QUANTIZATION_GROUP_SIZE="0",
        )
    return properties


def refuse_unsupported(settings: SpeculativeSettings, beam_width: int, n: int) -> None:
    """Beams and several sequences per request cannot be verified against one draft."""
    if not settings.enabled:
        return
    if beam_width > 1:
        raise InvalidRequest(
            f"beam_width must be 1 while speculative decoding ({settings.mode}) is on, "
            f"got {beam_width}"
        )
    if n > 1:
        raise InvalidRequest(
            f"num_return_sequences must be 1 while speculative decoding ({settings.mode}) "
            f"is on, got {n}"
        )


def refuse_unsupported_inputs(
    settings: SpeculativeSettings, lookup: Callable[[str], np.ndarray | None]
) -> None:
    """:func:`refuse_unsupported` on the engine step's inputs (``beam_width``,
    ``num_return_sequences``; the largest value of any batch row counts)."""

    def largest(name: str) -> int:
        array = lookup(name)
        if array is None or np.asarray(array).size == 0:
            return 1
        return int(np.max(np.asarray(array)))

    refuse_unsupported(settings, largest("beam_width"), largest("num_return_sequences"))


@dataclass
class SpeculationStats:
    total_draft_tokens: int = 0
    total_accepted_draft_tokens: int = 0

    @property
    def acceptance_rate(self) -> float:
        drafted = self.total_draft_tokens
        return self.total_accepted_draft_tokens / drafted if drafted else 0.0

    def as_dict(self) -> dict[str, float]:
        return {**self.__dict__, "acceptance_rate": self.acceptance_rate}


class Speculation:
    """Per-request settings and acceptance counting for one pipeline."""

    def __init__(self, settings: SpeculativeSettings) -> None:
        self.settings = settings
        self.stats = SpeculationStats()

    def configure(self, config: Any) -> None:
        """Every request of a speculative pipeline must carry its draft settings."""
        config.num_assistant_tokens = self.settings.num_assistant_tokens
        if self.settings.mode == "prompt_lookup":
            config.max_ngram_size = self.settings.max_ngram_size

    def record(self, generated_before: int, received: int, max_new_tokens: int) -> None:
        """One step's output for one sequence: ``received`` tokens after ``generated_before``.

        The first token comes from the prompt pass and has no drafts; later steps offer
        K drafts (fewer when max_new_tokens leaves less room) and keep received - 1.
        """
        if received <= 0 or generated_before == 0:
            return
        room = max(max_new_tokens - generated_before - 1, 0)
        drafted = min(self.settings.num_assistant_tokens, room)
        self.stats.total_draft_tokens += drafted
        self.stats.total_accepted_draft_tokens += min(received - 1, drafted)
