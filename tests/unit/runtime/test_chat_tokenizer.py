"""The light chat tokenizer gives exactly the ids transformers gives for the built model."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgectl.runtime.chat_tokenizer import ChatTokenizer

PROMPTS = ["What is the capital of France?", "Café naïve — 日本語 🙂\nsecond line", " spaces  "]


@pytest.mark.parametrize("prompt", PROMPTS)
def test_chat_template_and_ids_match_transformers(built_artifact: Path, prompt: str) -> None:
    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(str(built_artifact))
    light = ChatTokenizer.from_dir(built_artifact)
    messages = [{"role": "user", "content": prompt}]
    expected = reference.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    rendered = light.apply_chat_template(messages, add_generation_prompt=True)
    assert rendered == expected
    assert light.encode(rendered) == reference.encode(rendered, add_special_tokens=False)
