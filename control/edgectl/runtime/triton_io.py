"""Small helpers the Triton ``model.py`` files share (no Triton import here)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np

from edgectl.runtime.contract import InvalidRequest


def model_parameters(args: dict[str, Any]) -> dict[str, str]:
    """The ``parameters`` block of a model's config as plain strings."""
    config = json.loads(args["model_config"])
    return {key: value["string_value"] for key, value in config.get("parameters", {}).items()}


def parse_bool(text: str) -> bool:
    return str(text).strip().lower() in {"1", "true", "yes", "on"}


def scalar(array: np.ndarray | None, field: str, cast: Callable[[Any], Any], default: Any) -> Any:
    """One value from a per-request tensor (``[1]`` or ``[1, 1]``); ``default`` when absent."""
    if array is None:
        return default
    flat = np.asarray(array).reshape(-1)
    if flat.size != 1:
        raise InvalidRequest(f"{field} must hold exactly one value, got {flat.size}")
    value = flat[0]
    if isinstance(value, (float, np.floating)) and not np.isfinite(value):
        raise InvalidRequest(f"{field} must be a finite number, got {value}")
    return cast(value.item() if hasattr(value, "item") else value)


def strings(array: np.ndarray | None) -> list[Any]:
    """A list of strings/bytes from a STRING tensor of any shape."""
    if array is None:
        return []
    return list(np.asarray(array, dtype=object).reshape(-1))


def text_list(array: np.ndarray | None, field: str) -> list[str]:
    """Strings of a STRING tensor as text; invalid UTF-8 is refused naming ``field``."""
    texts = []
    for index, value in enumerate(strings(array)):
        try:
            texts.append(value.decode("utf-8") if isinstance(value, bytes) else str(value))
        except UnicodeDecodeError:
            raise InvalidRequest(f"{field}[{index}] is not valid UTF-8") from None
    return texts
