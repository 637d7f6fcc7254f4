"""A tiny random Llama checkpoint (with a word-level tokenizer) for build tests.

Its widths (128 hidden, 256 intermediate) are multiples of TensorRT-LLM's INT4 group
sizes, so every precision applies; it quantizes in seconds on a CPU.
"""

from __future__ import annotations

from pathlib import Path

import pytest

VOCAB = 512
HIDDEN = 128
INTERMEDIATE = 256
LAYERS = 2


def _write_tokenizer(folder: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from edgectl.build.calibration import dataset_path

    words = dataset_path("builtin:calibration").read_text(encoding="utf-8").split()
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for word in words:
        if len(vocab) >= VOCAB:
            break
        vocab.setdefault(word, len(vocab))
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    fast.save_pretrained(folder)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    """A saved HF LlamaForCausalLM with seeded random weights and its tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-llama")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    _write_tokenizer(folder)
    return folder
