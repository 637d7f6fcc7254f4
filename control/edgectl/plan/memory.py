"""Memory arithmetic: weight bytes by precision, KV-cache bytes, workspace, sequences that fit.

The same arithmetic NVIDIA describes in prose for TensorRT-LLM: the engine loads its
weights, reserves activation buffers sized by ``max_num_tokens`` and logits for
``max_batch_size``, then gives ``kv_cache_free_gpu_mem_fraction`` of what is left to
the paged KV cache. How many sequences of a context length fit follows from that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from edgectl.build.recipe import INT4_FORMATS, Recipe
from edgectl.plan.shapes import ModelShape

GB = 1e9
KV_BYTES = {"fp16": 2, "int8": 1, "fp8": 1}
WEIGHT_BITS = {"fp32": 32, "fp16": 16, "int8_wo": 8, "int8_sq": 8}
# GGUF blocks served as they are (CPU only), bits per weight with the block's own scales:
# Q4_1 holds 32 four-bit weights plus an fp16 scale and an fp16 minimum (5 bits a weight),
# Q8_0 32 bytes plus an fp16 scale (8.5). Without the file at hand the planner assumes the
# common layout of Q4_1 layers and a Q8_0 embedding/head, as in the embedded model.
GGUF_BITS = {"gguf-native": 5.0, "gguf-q8_0": 8.5}
SCALE_BYTES = 2  # one fp16 scale per output channel (INT8) or per group (INT4)
TOKENS_PER_BLOCK = 64  # TensorRT-LLM's paged KV block
ACTIVATION_BYTES = 2  # fp16 activations


@dataclass(frozen=True)
class Matrix:
    """One weight matrix ``rows x cols`` (rows = input features)."""

    rows: int
    cols: int

    @property
    def params(self) -> int:
        return self.rows * self.cols


def layer_matrices(shape: ModelShape) -> list[Matrix]:
    """One decoder layer's projections: q, k, v, o, gate, up, down."""
    h, i = shape.hidden_size, shape.intermediate_size
    q = shape.num_attention_heads * shape.head_dim
    kv = shape.num_key_value_heads * shape.head_dim
    return [Matrix(h, q), Matrix(h, kv), Matrix(h, kv), Matrix(q, h)] + [
        Matrix(h, i),
        Matrix(h, i),
        Matrix(i, h),
    ]


def matrix_bytes(matrix: Matrix, fmt: str, group_size: int) -> float:
    """Stored bytes of one matrix: packed weights plus their fp16 scales."""
    if fmt in GGUF_BITS:
        return matrix.params * GGUF_BITS[fmt] / 8
    if fmt in INT4_FORMATS:
        groups = math.ceil(matrix.rows / group_size) * matrix.cols
        return matrix.params / 2 + groups * SCALE_BYTES
    bits = WEIGHT_BITS[fmt]
    scales = matrix.cols * SCALE_BYTES if bits == 8 else 0
    return matrix.params * bits / 8 + scales


def layer_formats(recipe: Recipe, layers: int) -> list[str]:
    """Each decoder layer's weight format (mixed-precision ranges override the default)."""
    formats = [recipe.precision.weights] * layers
    for item in recipe.mixed_precision.layers if recipe.mixed_precision else []:
        for index in range(item.range[0], min(item.range[1], layers - 1) + 1):
            formats[index] = item.weights
    return formats


def head_format(recipe: Recipe, engine: str) -> str:
    """The output head's (and embedding's) format.

    A mixed-precision recipe names it. Otherwise TensorRT-LLM keeps it fp16 (fp32 for an
    fp32 recipe) and NNCF's CPU export compresses it like the layers, to INT8 at most.
    """
    if recipe.mixed_precision:
        return recipe.mixed_precision.lm_head
    weights = recipe.precision.weights
    if weights in ("fp32", "fp16"):
        return weights
    if weights == "gguf-native":
        return "gguf-q8_0"
    return "int8_wo" if engine == "cpu" else "fp16"


@dataclass(frozen=True)
class Weights:
    """Weight bytes split by where they are read: every decode step streams layers + head."""

    layers: float
    head: float  # the output projection (the embedding too when tied)
    embedding: float  # a separate input embedding (untied): one row read per token
    norms: float
    params: int
    formats: dict[str, int]  # format -> parameters stored in it
    matmul: dict[str, int]  # format -> parameters multiplied per token (not the lookup table)
    head_format: str
    head_params: int

    @property
    def total(self) -> float:
        return self.layers + self.head + self.embedding + self.norms

    @property
    def streamed_per_step(self) -> float:
        """Bytes a decode step reads: every layer, the head, the norms (not the lookup table)."""
        return self.layers + self.head + self.norms


def weight_bytes(shape: ModelShape, recipe: Recipe, engine: str) -> Weights:
    group = recipe.precision.group_size
    matmul: dict[str, int] = {}
    layers = 0.0
    for fmt in layer_formats(recipe, shape.num_hidden_layers):
        for matrix in layer_matrices(shape):
            layers += matrix_bytes(matrix, fmt, group)
            matmul[fmt] = matmul.get(fmt, 0) + matrix.params
    head_fmt = head_format(recipe, engine)
    table = Matrix(shape.hidden_size, shape.vocab_size)
    head = matrix_bytes(table, head_fmt, group)
    matmul[head_fmt] = matmul.get(head_fmt, 0) + table.params
    embedding = 0.0 if shape.tie_word_embeddings else head
    formats = dict(matmul)
    if not shape.tie_word_embeddings:
        formats[head_fmt] += table.params
    norm_params = (2 * shape.num_hidden_layers + 1) * shape.hidden_size
    return Weights(
        layers=layers,
        head=head,
        embedding=embedding,
        norms=norm_params * 2,
        params=sum(formats.values()) + norm_params,
        formats=formats,
        matmul=matmul,
        head_format=head_fmt,
        head_params=table.params,
    )


def kv_bytes_per_token(shape: ModelShape, kv_cache: str) -> int:
    """K and V for every layer: 2 x layers x kv_heads x head_dim x bytes."""
    return (2 * shape.num_hidden_layers * shape.num_key_value_heads * shape.head_dim) * KV_BYTES[
        kv_cache
    ]


def kv_bytes_per_sequence(shape: ModelShape, kv_cache: str, context: int) -> int:
    """A sequence holds whole KV blocks: the context rounded up to 64 tokens."""
    blocks = math.ceil(context / TOKENS_PER_BLOCK)
    return kv_bytes_per_token(shape, kv_cache) * blocks * TOKENS_PER_BLOCK


def activation_bytes_per_token(shape: ModelShape) -> int:
    """One layer's widest live tensors per token (fp16): gate+up outputs, q/k/v, residuals."""
    qkv = (shape.num_attention_heads + 2 * shape.num_key_value_heads) * shape.head_dim
    return ACTIVATION_BYTES * (2 * shape.intermediate_size + 3 * shape.hidden_size + qkv)


def workspace_bytes(
    shape: ModelShape, runtime_gb: float, max_num_tokens: int, max_batch_size: int
) -> float:
    """Runtime + activation buffers for max_num_tokens + fp32 logits for max_batch_size."""
    return (
        runtime_gb * GB
        + max_num_tokens * activation_bytes_per_token(shape)
        + max_batch_size * shape.vocab_size * 4
    )


@dataclass(frozen=True)
class Fit:
    """How the device's memory divides: weights, workspace, the KV pool, sequences."""

    capacity: float
    weights: float
    workspace: float
    free: float  # after weights and workspace
    kv_fraction: float
    kv_pool: float
    kv_per_sequence: int
    sequences: int


def fit_sequences(
    capacity: float, weights: float, workspace: float, kv_fraction: float, kv_per_sequence: int
) -> Fit:
    """Sequences of one context length the KV pool holds (0 when the weights do not fit)."""
    free = capacity - weights - workspace
    pool = max(0.0, free) * kv_fraction
    return Fit(
        capacity=capacity,
        weights=weights,
        workspace=workspace,
        free=free,
        kv_fraction=kv_fraction,
        kv_pool=pool,
        kv_per_sequence=kv_per_sequence,
        sequences=int(pool // kv_per_sequence),
    )
