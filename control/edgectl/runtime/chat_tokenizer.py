"""The model's tokenizer and chat template without importing transformers.

``transformers.AutoTokenizer`` costs seconds of import time in every preprocessing
stub (most of a server's start-up here); the saved ``tokenizer.json`` plus the
chat template rendered the way transformers renders it (sandboxed jinja2 with
``trim_blocks``/``lstrip_blocks``) give the same ids in a fraction of that.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class ChatTokenizer:
    def __init__(self, tokenizer: Any, chat_template: str | None, special: dict[str, str]):
        self._tokenizer = tokenizer
        self.chat_template = chat_template
        self._special = special
        self._compiled = None

    @classmethod
    def from_dir(cls, directory: Path) -> ChatTokenizer:
        from tokenizers import Tokenizer

        config_path = directory / "tokenizer_config.json"
        config = (
            json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
        )
        template_path = directory / "chat_template.jinja"
        template = (
            template_path.read_text(encoding="utf-8")
            if template_path.is_file()
            else config.get("chat_template")
        )
        special = {
            key: value
            for key in ("bos_token", "eos_token", "unk_token", "pad_token")
            if isinstance(value := config.get(key), str)
        }
        return cls(Tokenizer.from_file(str(directory / "tokenizer.json")), template, special)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def apply_chat_template(
        self, messages: list[dict[str, str]], add_generation_prompt: bool, tokenize: bool = False
    ) -> str:
        if tokenize:
            raise ValueError("render the template, then encode the text")
        if self._compiled is None:
            self._compiled = sandboxed_environment().from_string(self.chat_template or "")
        return self._compiled.render(
            messages=messages, add_generation_prompt=add_generation_prompt, **self._special
        )


def sandboxed_environment():
    """Jinja as transformers renders chat templates: sandboxed, no file or attribute access."""
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise ValueError(f"chat template: {message}")

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols]
    )
    env.globals["raise_exception"] = raise_exception
    env.filters["tojson"] = lambda value, indent=None: json.dumps(
        value, indent=indent, ensure_ascii=False
    )
    return env
