"""A tiny Llama written as a GGUF with the ``gguf`` package: every block type gguf-native serves.

Layer tensors rotate through Q4_0, Q4_1, Q8_0 and F16 so each kind sits in every role; the
embedding is Q8_0 and shared with the head (no ``output.weight``), as in SmolLM2's file.
The vocabulary is byte-level (GPT-2's 256 byte symbols), two control tokens, two merges.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HIDDEN = 64
INTERMEDIATE = 128
LAYERS = 2
HEADS = 4
KV_HEADS = 2
# Per layer: which block type each weight gets (layer 1 rotates them by one).
LAYER_KINDS = {
    "attn_q": "Q4_0",
    "attn_k": "Q4_1",
    "attn_v": "Q8_0",
    "attn_output": "Q4_1",
    "ffn_gate": "Q4_0",
    "ffn_up": "Q4_1",
    "ffn_down": "F16",
}
ROTATION = ("Q4_0", "Q4_1", "Q8_0", "F16")


def byte_symbols() -> list[str]:
    """GPT-2's printable stand-ins for the 256 byte values (its byte-level alphabet)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    symbols, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            symbols[byte] = chr(byte)
        else:
            symbols[byte] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


def shapes() -> dict[str, tuple[int, int]]:
    """(rows, cols) of each layer weight, HF orientation (out x in)."""
    head_dim = HIDDEN // HEADS
    return {
        "attn_q": (HIDDEN, HIDDEN),
        "attn_k": (KV_HEADS * head_dim, HIDDEN),
        "attn_v": (KV_HEADS * head_dim, HIDDEN),
        "attn_output": (HIDDEN, HIDDEN),
        "ffn_gate": (INTERMEDIATE, HIDDEN),
        "ffn_up": (INTERMEDIATE, HIDDEN),
        "ffn_down": (HIDDEN, INTERMEDIATE),
    }


def layer_kind(layer: int, role: str) -> str:
    base = ROTATION.index(LAYER_KINDS[role])
    return ROTATION[(base + layer) % len(ROTATION)]


def write_tiny_gguf(
    path: Path,
    *,
    arch: str = "llama",
    kinds: dict[str, str] | None = None,
    seed: int = 0,
) -> Path:
    """Write the tiny model; ``kinds`` overrides a tensor's type by GGUF name (raw bytes
    of the right size are written for types the ``gguf`` package cannot quantize)."""
    import gguf
    from gguf.quants import quantize

    rng = np.random.default_rng(seed)
    tokens = [*byte_symbols(), "<|endoftext|>", "<|im_end|>", "Ġt", "he"]
    token_types = [1] * 256 + [3, 3, 1, 1]
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(LAYERS)
    writer.add_context_length(256)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(INTERMEDIATE)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(HIDDEN // HEADS)
    writer.add_vocab_size(len(tokens))
    writer.add_file_type(3)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(token_types)
    writer.add_token_merges(["Ġ t", "h e"])
    writer.add_bos_token_id(256)
    writer.add_eos_token_id(257)
    writer.add_pad_token_id(256)

    def tensor(name: str, kind: str, rows: int, cols: int, scale: float = 0.05) -> None:
        kind = (kinds or {}).get(name, kind)
        qtype = gguf.GGMLQuantizationType[kind]
        values = (rng.standard_normal((rows, cols)) * scale).astype(np.float32)
        if kind == "F32":
            writer.add_tensor(name, values)
        elif kind == "F16":
            writer.add_tensor(name, values.astype(np.float16))
        elif kind in ("Q8_0", "Q4_0", "Q4_1"):
            data = quantize(values, qtype)
            writer.add_tensor(name, data, raw_shape=data.shape, raw_dtype=qtype)
        else:  # a type numpy cannot quantize: bytes of the right size
            block, size = gguf.GGML_QUANT_SIZES[qtype]
            data = rng.integers(0, 255, (rows, cols // block * size), dtype=np.uint8)
            writer.add_tensor(name, data, raw_shape=data.shape, raw_dtype=qtype)

    tensor("token_embd.weight", "Q8_0", len(tokens), HIDDEN, scale=0.5)
    for layer in range(LAYERS):
        norm = 1.0 + 0.1 * rng.standard_normal(HIDDEN).astype(np.float32)
        writer.add_tensor(f"blk.{layer}.attn_norm.weight", norm)
        for role, (rows, cols) in shapes().items():
            tensor(f"blk.{layer}.{role}.weight", layer_kind(layer, role), rows, cols)
        norm = 1.0 + 0.1 * rng.standard_normal(HIDDEN).astype(np.float32)
        writer.add_tensor(f"blk.{layer}.ffn_norm.weight", norm)
    writer.add_tensor(
        "output_norm.weight", 1.0 + 0.1 * rng.standard_normal(HIDDEN).astype(np.float32)
    )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
