from __future__ import annotations

import json
import re

import numpy as np
import pytest

from edgectl.runtime.contract import InvalidRequest, decode_word_lists
from edgectl.runtime.tokenization import PreprocessLimits, Preprocessor, stack_rows

LIMITS = PreprocessLimits(max_input_len=12, max_output_len=64)
END_ID, PAD_ID = 0, 1
OUTPUT_KEYS = {
    "INPUT_ID",
    "REQUEST_INPUT_LEN",
    "REQUEST_OUTPUT_LEN",
    "STOP_WORDS_IDS",
    "BAD_WORDS_IDS",
    "OUT_END_ID",
    "OUT_PAD_ID",
    "DECODER_INPUT_ID",
    "REQUEST_DECODER_INPUT_LEN",
}
# Decoder-only placeholders NVIDIA's preprocessing also returns (empty: nothing set).
EMPTY_KEYS = {"EMBEDDING_BIAS": np.float32, "OUT_PROMPT_TABLE_EXTRA_IDS": np.uint64}


@pytest.fixture
def pre(bpe) -> Preprocessor:
    return Preprocessor(bpe, LIMITS, end_id=END_ID, pad_id=PAD_ID)


def test_prepare_outputs_int32_tensors_with_the_contract_names(pre, bpe):
    out = pre.prepare("Hello world", max_tokens=8)
    assert set(out) == OUTPUT_KEYS | set(EMPTY_KEYS)
    assert all(out[name].dtype == np.int32 for name in OUTPUT_KEYS)
    for name, dtype in EMPTY_KEYS.items():
        assert out[name].dtype == dtype and out[name].size == 0
    assert out["REQUEST_DECODER_INPUT_LEN"].tolist() == [0]
    ids = bpe.encode("Hello world")
    assert out["INPUT_ID"].tolist() == ids
    assert out["REQUEST_INPUT_LEN"].tolist() == [len(ids)]
    assert out["REQUEST_OUTPUT_LEN"].tolist() == [8]
    assert out["OUT_END_ID"].tolist() == [END_ID]
    assert out["OUT_PAD_ID"].tolist() == [PAD_ID]
    assert decode_word_lists(out["STOP_WORDS_IDS"]) == []
    assert decode_word_lists(out["BAD_WORDS_IDS"]) == []


def test_prepare_accepts_utf8_bytes_and_request_end_and_pad_ids(pre, bpe):
    out = pre.prepare("Café 東京".encode(), max_tokens=1, end_id=7, pad_id=9)
    assert out["INPUT_ID"].tolist() == bpe.encode("Café 東京")
    assert (out["OUT_END_ID"].tolist(), out["OUT_PAD_ID"].tolist()) == ([7], [9])


@pytest.mark.parametrize("text", ["", "   ", b"", "\n\t"])
def test_empty_text_input_is_rejected(pre, text):
    with pytest.raises(InvalidRequest, match="text_input must not be empty"):
        pre.prepare(text, max_tokens=8)


@pytest.mark.parametrize("max_tokens", [0, -1, LIMITS.max_output_len + 1])
def test_max_tokens_out_of_range_is_rejected(pre, max_tokens):
    with pytest.raises(
        InvalidRequest, match=r"max_tokens must be between 1 and 64 \(max_output_len"
    ):
        pre.prepare("Hello", max_tokens=max_tokens)


def test_max_tokens_at_the_limit_is_accepted(pre):
    assert pre.prepare("Hello", max_tokens=LIMITS.max_output_len)["REQUEST_OUTPUT_LEN"] == [64]


@pytest.mark.parametrize(
    "text",
    [
        "hello " * 20,  # too many tokens
        "x" * (LIMITS.max_input_len * 64 + 1),  # refused before tokenizing
    ],
)
def test_prompt_over_max_input_len_is_rejected(pre, text):
    with pytest.raises(InvalidRequest, match="max_input_len=12"):
        pre.prepare(text, max_tokens=8)


def test_invalid_utf8_names_the_field(pre):
    with pytest.raises(InvalidRequest, match="text_input is not valid UTF-8"):
        pre.prepare(b"ok \xff\xfe", max_tokens=8)
    with pytest.raises(InvalidRequest, match="stop_words is not valid UTF-8"):
        pre.prepare("Hello", max_tokens=8, stop_words=[b"\xc3"])


def test_stop_and_bad_words_pack_every_spelling(pre, bpe):
    out = pre.prepare("Hello", max_tokens=8, stop_words=["world", b"Paris"], bad_words=[" fox"])
    assert out["STOP_WORDS_IDS"].shape[0] == 2
    assert decode_word_lists(out["STOP_WORDS_IDS"]) == [
        bpe.encode("world"),
        bpe.encode(" world"),
        bpe.encode("Paris"),
        bpe.encode(" Paris"),
    ]
    # a word that already starts with a space has only that form
    assert decode_word_lists(out["BAD_WORDS_IDS"]) == [bpe.encode(" fox")]


def test_word_ids_skips_empty_words_and_duplicate_spellings(pre, bpe):
    assert pre.word_ids(["", "world", "world"], "stop_words") == [
        bpe.encode("world"),
        bpe.encode(" world"),
    ]


def test_chat_template_without_template_is_rejected(pre):
    with pytest.raises(InvalidRequest, match="apply_chat_template"):
        pre.prepare("Hello", max_tokens=8, apply_chat_template=True)


def test_chat_template_is_applied_before_tokenizing(chat_bpe):
    pre = Preprocessor(chat_bpe, PreprocessLimits(64, 64), end_id=END_ID, pad_id=PAD_ID)
    out = pre.prepare("Hi", max_tokens=8, apply_chat_template=True)
    assert out["INPUT_ID"].tolist() == chat_bpe.encode("<user>Hi</user><assistant>")
    assert pre.prepare("Hi", max_tokens=8)["INPUT_ID"].tolist() == chat_bpe.encode("Hi")


def test_chat_template_counts_towards_max_input_len(chat_bpe):
    pre = Preprocessor(chat_bpe, LIMITS, end_id=END_ID, pad_id=PAD_ID)
    assert len(chat_bpe.encode("Hi")) <= LIMITS.max_input_len
    with pytest.raises(InvalidRequest, match="max_input_len=12"):
        pre.prepare("Hi", max_tokens=8, apply_chat_template=True)


def test_messages_render_every_turn_with_the_chat_template(chat_bpe):
    pre = Preprocessor(chat_bpe, PreprocessLimits(64, 64), end_id=END_ID, pad_id=PAD_ID)
    messages = json.dumps(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    )
    out = pre.prepare("ignored", max_tokens=8, messages=messages)
    expected = "<system>Be brief.</system><user>Hi</user><assistant>"
    assert out["INPUT_ID"].tolist() == chat_bpe.encode(expected)


@pytest.mark.parametrize(
    ("messages", "fragment"),
    [
        ("not json", "messages is not valid JSON"),
        ("[]", "non-empty JSON list"),
        ('[{"role": "user"}]', "messages[0] must be an object with a string content"),
        ('[{"role": "robot", "content": "x"}]', "messages[0].role must be one of"),
    ],
)
def test_malformed_messages_are_refused_by_name(chat_bpe, messages, fragment):
    pre = Preprocessor(chat_bpe, PreprocessLimits(64, 64), end_id=END_ID, pad_id=PAD_ID)
    with pytest.raises(InvalidRequest, match=re.escape(fragment)):
        pre.prepare("", max_tokens=8, messages=messages)


def test_rows_stack_into_a_padded_batch():
    rows = [
        {"INPUT_ID": np.asarray([1, 2, 3], dtype=np.int32), "LEN": np.asarray([3])},
        {"INPUT_ID": np.asarray([4], dtype=np.int32), "LEN": np.asarray([1])},
    ]
    batch = stack_rows(rows, {"INPUT_ID": 9})
    assert batch["INPUT_ID"].tolist() == [[1, 2, 3], [4, 9, 9]]
    assert batch["LEN"].tolist() == [[3], [1]]
