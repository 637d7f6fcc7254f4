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


def _first(result: Any, name: str) -> Any | None:
    array = result.as_numpy(name)  # None when the response lacks that output
    if array is None or array.size == 0:
        return None
    return array.reshape(-1)[0]


def _text(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def read_piece(result: Any, names: frozenset[str]) -> Piece:
    """A Piece from a tritonclient ``InferResult`` (outputs absent on older ensembles)."""
    piece = Piece()
    texts = result.as_numpy("text_output")
    if texts is not None:
        piece.text = "".join(_text(item) for item in texts.reshape(-1))
    if "sequence_index" in names and (index := _first(result, "sequence_index")) is not None:
        piece.index = int(index)
    if "finish_reason" in names and (reason := _first(result, "finish_reason")) is not None:
        piece.finish_reason = _text(reason) or None
    for attribute, output in (("input_tokens", "num_input_tokens"),
                              ("output_tokens", "num_output_tokens")):  # fmt: skip
        if output in names and (count := _first(result, output)) is not None:
            setattr(piece, attribute, int(count))
    if "output_log_probs" in names:
        values = result.as_numpy("output_log_probs")
        if values is not None:
            piece.log_probs = [float(v) for v in values.reshape(-1)]
    return piece
