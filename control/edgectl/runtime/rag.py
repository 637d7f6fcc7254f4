"""RAG prompts: retrieved passages and a question, rendered by a per-model template
under a token budget.

Passages arrive in retrieval order (best first).  They are kept in that order while
the rendered prompt fits ``max_input_len - max_tokens - reserve`` tokens; the first one
that does not fit and every later one are dropped whole, so the model never sees a
passage cut mid-sentence and the client learns how much was left out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from edgectl.runtime.contract import InvalidRequest

TEMPLATE_FILES = {"zero_shot": "rag_zero_shot.jinja", "few_shot": "rag_few_shot.jinja"}


@dataclass(frozen=True)
class RagBudget:
    max_input_len: int
    reserve: int

    def tokens_for(self, max_tokens: int) -> int:
        return self.max_input_len - max_tokens - self.reserve


@dataclass(frozen=True)
class RagPrompt:
    ids: list[int]
    passages_kept: int
    passages_dropped: int
    tokens_dropped: int


def load_template(folder: Path, variant: str):
    """The sandboxed Jinja template for ``variant`` from the model's own folder."""
    from edgectl.runtime.chat_tokenizer import sandboxed_environment

    if variant not in TEMPLATE_FILES:
        raise ValueError(
            f"rag_template must be one of {', '.join(TEMPLATE_FILES)}, got {variant!r}"
        )
    path = folder / TEMPLATE_FILES[variant]
    return sandboxed_environment().from_string(path.read_text(encoding="utf-8"))


def build_prompt(
    render: Callable[[list[str], str], list[int]],
    count: Callable[[str], int],
    passages: Sequence[str],
    question: str,
    budget: RagBudget,
    max_tokens: int,
) -> RagPrompt:
    """Keep passages in order while ``render(kept, question)`` fits the budget.

    ``render`` turns passages and question into prompt ids (template, chat template,
    tokenizer); ``count`` gives one passage's own token count for the dropped total.
    """
    limit = budget.tokens_for(max_tokens)
    ids = render([], question)
    if len(ids) > limit:
        raise InvalidRequest(
            f"rag_question: the prompt without passages is {len(ids)} tokens, over the budget "
            f"of {limit} = max_input_len {budget.max_input_len} - max_tokens {max_tokens} "
            f"- reserve {budget.reserve}"
        )
    kept = 0
    for kept in range(1, len(passages) + 1):
        candidate = render(list(passages[:kept]), question)
        if len(candidate) > limit:
            kept -= 1
            break
        ids = candidate
    else:
        kept = len(passages)
    dropped = passages[kept:]
    return RagPrompt(
        ids=ids,
        passages_kept=kept,
        passages_dropped=len(dropped),
        tokens_dropped=sum(count(text) for text in dropped),
    )


class RagPreprocessor:
    """Preprocessing's RAG path: template + the model's chat template + the budget."""

    def __init__(self, template, budget: RagBudget, encode_prompt, encode) -> None:
        self._template = template
        self.budget = budget
        self._encode_prompt = encode_prompt  # (text, apply_chat_template) -> ids
        self._encode = encode  # text -> ids

    def prompt(
        self,
        passages: Sequence[str],
        question: str,
        max_tokens: int,
        apply_chat_template: bool,
    ) -> RagPrompt:
        if not question.strip():
            raise InvalidRequest("rag_question must not be empty")

        def render(kept: list[str], text: str) -> list[int]:
            rendered = self._template.render(passages=kept, question=text)
            return self._encode_prompt(rendered, apply_chat_template)

        return build_prompt(
            render,
            lambda text: len(self._encode(text)),
            passages,
            question,
            self.budget,
            max_tokens,
        )
