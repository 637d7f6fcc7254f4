"""GGUF files served as they are: llama.cpp's quantized blocks become OpenVINO weights.

A GGUF's 4- and 8-bit blocks (32 weights and an f16 scale each) already are the format
OpenVINO's CPU plugin runs as compressed-weight matmuls, so they are copied, not
re-quantized: re-rounding de-quantized 4-bit weights onto another grid is what costs the
INT4 exports their quality. The graph (and the tokenizer files) come from the float IR
optimum-intel exports for the same checkpoint; every weight constant in it is replaced by a
subgraph built from the GGUF's own blocks, so the float weights are never used.

Block layouts (ggml): Q8_0 = f16 d + 32 int8 (w = d*q); Q4_0 = f16 d + 16 bytes of nibbles
(w = d*(q-8)); Q4_1 = f16 d + f16 m + 16 bytes of nibbles (w = d*q + m). Nibble j of a block
is the low half of byte j for j < 16, the high half of byte j-16 otherwise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from edgectl.errors import EdgectlError

GGUF_MAGIC = b"GGUF"
BLOCK = 32  # weights per block in Q8_0, Q4_0 and Q4_1
# Architectures whose tensors map onto Hugging Face's LlamaForCausalLM one to one.
LLAMA_FAMILY = ("llama",)
# Block types copied as they are; anything else is refused by name.
NATIVE_TYPES = ("F32", "F16", "Q8_0", "Q4_0", "Q4_1")
# How Q4_1's float minimum is served (see q4_1_weight / add_minimum_correction).
Q41Mode = Literal["exact", "rounded", "add"]
Q41_MODES: tuple[str, ...] = ("exact", "rounded", "add")
# Tensors a Llama GGUF may carry that have no weight in the HF graph (rope tables).
_UNUSED = re.compile(r"^rope_freqs\.weight$")
_BLOCK_TENSOR = re.compile(r"^blk\.(\d+)\.(\w+)\.weight$")
_LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_TOP_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}


class GgufError(EdgectlError):
    """A GGUF file that cannot be served as it is; the message names the file."""


@dataclass
class GgufTensor:
    """One weight as stored: ``rows`` x ``cols`` in HF orientation, raw block bytes."""

    name: str  # the GGUF name (blk.3.attn_q.weight)
    hf_name: str  # the Hugging Face name (model.layers.3.self_attn.q_proj.weight)
    kind: str  # F32, F16, Q8_0, Q4_0, Q4_1
    rows: int
    cols: int
    data: Any  # numpy: [rows, cols] floats, or [rows, cols / 32, bytes per block] uint8


@dataclass
class Blocks:
    """A 32-block format unpacked: q [rows, blocks, 32], d (and m) [rows, blocks, 1] f16."""

    q: Any
    d: Any
    m: Any = None


def hf_name(gguf_name: str) -> str | None:
    """The Hugging Face Llama name of a GGUF tensor (None: not a known Llama tensor)."""
    if gguf_name in _TOP_NAMES:
        return _TOP_NAMES[gguf_name]
    match = _BLOCK_TENSOR.match(gguf_name)
    if match and match.group(2) in _LAYER_NAMES:
        return f"model.layers.{match.group(1)}.{_LAYER_NAMES[match.group(2)]}.weight"
    return None


def open_gguf(path: Path) -> Any:
    """``gguf.GGUFReader`` of ``path``, with errors that say what is wrong with the file."""
    import gguf

    path = Path(path)
    if not path.is_file():
        raise GgufError(f"{path}: no such GGUF file")
    with path.open("rb") as handle:
        magic = handle.read(4)
    if magic != GGUF_MAGIC:
        raise GgufError(
            f"{path}: not a GGUF file (starts with {magic!r}, a GGUF file starts with "
            f"{GGUF_MAGIC!r})"
        )
    try:
        return gguf.GGUFReader(str(path))
    except (ValueError, KeyError, IndexError, OverflowError) as err:
        raise GgufError(
            f"{path}: truncated or corrupted GGUF ({path.stat().st_size:,} bytes): its header "
            f"or tensor data does not match what the header declares ({err})"
        ) from None


def field_value(reader: Any, key: str, default: Any = None) -> Any:
    """A metadata value of the GGUF (``default`` when absent)."""
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def architecture(reader: Any, path: Path) -> str:
    """``general.architecture``; refuses models whose tensors are not Llama's."""
    arch = field_value(reader, "general.architecture")
    if arch not in LLAMA_FAMILY:
        raise GgufError(
            f"{path}: architecture {arch!r} is not Llama-family; GGUF sources must be "
            f"{', '.join(LLAMA_FAMILY)} (tensors that map onto LlamaForCausalLM)"
        )
    return arch


def check_gguf(path: Path) -> Any:
    """Open and validate a GGUF source (readable, Llama-family); returns the reader."""
    reader = open_gguf(path)
    architecture(reader, path)
    return reader


def _unpermute_rows(array: Any, heads: int) -> Any:
    """Undo llama.cpp's rotary row interleave of Q/K weights (rows are output features).

    llama.cpp stores each head's rows as (half, pair) where Hugging Face has (pair, half);
    only whole rows move, so the blocks inside each row are untouched (exact).
    """
    half = array.shape[0] // heads // 2
    rest = array.shape[1:]
    return array.reshape(heads, half, 2, *rest).swapaxes(1, 2).reshape(array.shape)


def read_tensors(path: Path, kinds: tuple[str, ...] = NATIVE_TYPES) -> dict[str, GgufTensor]:
    """Every weight of a Llama GGUF by its HF name, in HF row order, blocks unchanged.

    Refuses block types outside ``kinds`` (naming them and a tensor of each) and tensors
    that are not Llama weights.
    """
    reader = check_gguf(path)
    heads = int(field_value(reader, "llama.attention.head_count"))
    kv_heads = int(field_value(reader, "llama.attention.head_count_kv", heads))
    unsupported: dict[str, str] = {}
    unknown: list[str] = []
    tensors: dict[str, GgufTensor] = {}
    for tensor in reader.tensors:
        kind = tensor.tensor_type.name
        name = hf_name(tensor.name)
        if name is None:
            if not _UNUSED.match(tensor.name):
                unknown.append(tensor.name)
            continue
        if kind not in kinds:
            unsupported.setdefault(kind, tensor.name)
            continue
        # GGUF lists dimensions innermost first: [cols] or [cols, rows]
        cols, rows = int(tensor.shape[0]), int(tensor.shape[1]) if len(tensor.shape) > 1 else 1
        data = tensor.data  # a norm vector stays as stored
        if len(tensor.shape) > 1 and kind.startswith("Q"):
            if cols % BLOCK:
                raise GgufError(f"{path}: {tensor.name} has {cols} columns, not whole blocks")
            data = data.reshape(rows, cols // BLOCK, -1)
        elif len(tensor.shape) > 1:
            data = data.reshape(rows, cols)
        if tensor.name.endswith("attn_q.weight"):
            data = _unpermute_rows(data, heads)
        elif tensor.name.endswith("attn_k.weight"):
            data = _unpermute_rows(data, kv_heads)
        tensors[name] = GgufTensor(tensor.name, name, kind, rows, cols, data)
    if unsupported:
        listed = ", ".join(f"{kind} (e.g. {name})" for kind, name in sorted(unsupported.items()))
        raise GgufError(
            f"{path}: block type {listed} cannot be served as it is; gguf-native supports "
            f"{', '.join(kinds)} (re-quantize the file with llama-quantize to Q8_0, Q4_0 "
            "or Q4_1, or build another precision from it)"
        )
    if unknown:
        raise GgufError(f"{path}: tensors that are not Llama weights: {', '.join(unknown[:5])}")
    return tensors


def unpack_blocks(tensor: GgufTensor) -> Blocks:
    """Split a Q8_0 / Q4_0 / Q4_1 tensor's blocks into quantized values and f16 scales.

    Q4_0's offset of 8 is folded into signed values (q - 8 in [-8, 7]): the same numbers.
    """
    import numpy as np

    raw = np.ascontiguousarray(tensor.data)
    d = raw[..., 0:2].copy().view(np.float16)
    if tensor.kind == "Q8_0":
        return Blocks(q=raw[..., 2:].copy().view(np.int8), d=d)
    header = 4 if tensor.kind == "Q4_1" else 2
    nibbles = raw[..., header:]
    q = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=-1)
    if tensor.kind == "Q4_0":
        return Blocks(q=q.astype(np.int8) - np.int8(8), d=d)
    m = raw[..., 2:4].copy().view(np.float16)
    return Blocks(q=q, d=d, m=m)


def dequantized(tensor: GgufTensor) -> Any:
    """The tensor's float32 values, computed as llama.cpp defines them (for checks)."""
    import numpy as np

    if not tensor.kind.startswith("Q"):
        return np.asarray(tensor.data, dtype=np.float32).reshape(tensor.rows, tensor.cols)
    blocks = unpack_blocks(tensor)
    values = blocks.d.astype(np.float32) * blocks.q.astype(np.float32)
    if blocks.m is not None:
        values = values + blocks.m.astype(np.float32)
    return values.reshape(tensor.rows, tensor.cols)


def rounded_zero_point(blocks: Blocks) -> Any:
    """Q4_1's -m/d rounded to an integer u4 zero point (what OpenVINO GenAI's loader does)."""
    import numpy as np

    d = blocks.d.astype(np.float32)
    ratio = np.divide(-blocks.m.astype(np.float32), d, out=np.zeros_like(d), where=d != 0)
    return np.clip(np.round(ratio), 0, 15).astype(np.uint8)
