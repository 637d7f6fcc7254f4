"""The ensemble side of a request: its input tensors, and what each response carries.

Names are those of NVIDIA's TensorRT-LLM ensemble plus edgectl's extensions
(``messages``, ``apply_chat_template``).  :class:`Capabilities` says which of them a
served ensemble has (from Triton's model metadata), so the gateway sends only what
the model takes and can say clearly what an older ensemble cannot do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Every input the gateway may send, with its Triton datatype.
INPUT_TYPES: dict[str, str] = {
    "text_input": "BYTES",
    "messages": "BYTES",
    "max_tokens": "INT32",
    "stop_words": "BYTES",
    "top_k": "INT32",
    "top_p": "FP32",
    "temperature": "FP32",
    "presence_penalty": "FP32",
    "frequency_penalty": "FP32",
    "random_seed": "UINT64",
    "min_length": "INT32",
    "min_tokens": "INT32",
    "ignore_eos": "BOOL",
    "stream": "BOOL",
    "apply_chat_template": "BOOL",
    "exclude_input_in_output": "BOOL",
    "num_return_sequences": "INT32",
    "return_num_input_tokens": "BOOL",
    "return_num_output_tokens": "BOOL",
    "return_log_probs": "BOOL",
    "guided_decoding_guide_type": "BYTES",
    "guided_decoding_guide": "BYTES",
}
_NUMPY = {"INT32": np.int32, "UINT64": np.uint64, "FP32": np.float32, "BOOL": np.bool_}


@dataclass(frozen=True)
class Capabilities:
    """What one served ensemble takes and returns, and how it must be called."""

    name: str
    inputs: frozenset[str]
    outputs: frozenset[str]
    decoupled: bool = True
    max_output_len: int | None = None

    def takes(self, name: str) -> bool:
        return name in self.inputs

    def returns(self, name: str) -> bool:
        return name in self.outputs

    @property
    def is_llm(self) -> bool:
        """An LLM ensemble on the TensorRT-LLM text contract."""
        return {"text_input", "max_tokens"} <= self.inputs and "text_output" in self.outputs


def tensor(name: str, value: Any) -> tuple[str, list[int], np.ndarray]:
    """(datatype, shape, array) of one input, batch dimension first."""
    datatype = INPUT_TYPES[name]
    items = value if isinstance(value, list) else [value]
    if datatype == "BYTES":
        array = np.asarray([[str(item).encode("utf-8") for item in items]], dtype=object)
    else:
        array = np.asarray([items], dtype=_NUMPY[datatype])
    return datatype, list(array.shape), array


@dataclass
class Piece:
    """One ensemble response, reduced to what an OpenAI choice needs."""

    text: str = ""
    index: int = 0  # sequence_index: which of the n choices
    finish_reason: str | None = None  # "stop"/"length" on a sequence's last response
    input_tokens: int | None = None
    output_tokens: int | None = None
    log_probs: list[float] = field(default_factory=list)
    final: bool = False  # Triton's final-response flag: nothing follows for the request


def _values(result: Any, name: str, names: frozenset[str]) -> list[Any]:
    """An output's values, flattened ([] when the model or this response lacks it)."""
    if name not in names and name != "text_output":
        return []
    array = result.as_numpy(name)  # None when the response lacks that output
    return [] if array is None else list(array.reshape(-1))


def _text(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def read_pieces(result: Any, names: frozenset[str]) -> list[Piece]:
    """The Pieces of a tritonclient ``InferResult``: one per sequence it carries.

    A streamed response carries one sequence; a unary response to a request for n
    sequences carries all n, one row each (``sequence_index`` says which).
    """
    texts = [_text(item) for item in _values(result, "text_output", names)]
    indices = [int(i) for i in _values(result, "sequence_index", names)]
    reasons = [_text(r) for r in _values(result, "finish_reason", names)]
    inputs = [int(n) for n in _values(result, "num_input_tokens", names)]
    outputs = [int(n) for n in _values(result, "num_output_tokens", names)]
    if len(texts) > 1 and len(texts) in (len(indices), len(reasons)):
        rows = len(texts)  # one row per sequence
    else:
        rows, texts = 1, ["".join(texts)]  # one sequence: every element is part of it

    def per_row(values: list, row: int) -> Any | None:
        """A row's value; None when the output does not have one value per row."""
        return values[row] if len(values) == rows else None

    log_probs = result.as_numpy("output_log_probs") if "output_log_probs" in names else None
    pieces = []
    for row in range(rows):
        index = per_row(indices, row)
        piece = Piece(text=texts[row], index=row if index is None else index)
        piece.finish_reason = per_row(reasons, row) or None
        piece.input_tokens = inputs[0] if inputs else None  # the prompt is shared
        piece.output_tokens = per_row(outputs, row)
        if log_probs is not None and log_probs.size:
            matrix = log_probs.reshape(rows, -1) if log_probs.size % rows == 0 else log_probs
            values = matrix[row] if matrix.ndim == 2 else matrix.reshape(-1)
            piece.log_probs = [float(v) for v in values]
        pieces.append(piece)
    return pieces
