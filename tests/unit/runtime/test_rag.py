"""RAG prompt budget: passages kept in order, dropped whole, numbers in the refusal."""

from __future__ import annotations

import pytest

from edgectl.resources import model_templates
from edgectl.runtime.contract import InvalidRequest
from edgectl.runtime.rag import RagBudget, RagPreprocessor, build_prompt, load_template


def words(text: str) -> list[int]:
    """One 'token' per word: easy numbers to check the budget by hand."""
    return [len(word) for word in text.split()]


def render(passages: list[str], question: str) -> list[int]:
    return words(" ".join(["Q:", question, *passages]))


PASSAGES = ["one two three", "four five", "six seven eight nine", "ten"]


def test_passages_are_kept_in_order_until_the_budget_then_dropped_whole() -> None:
    # question alone: 3 tokens; budget 20 - 6 - 2 = 12 -> 3 + 3 + 2 = 8 fits, + 4 = 12 fits
    prompt = build_prompt(render, lambda t: len(words(t)), PASSAGES, "a b", RagBudget(20, 2), 6)
    assert (prompt.passages_kept, prompt.passages_dropped, prompt.tokens_dropped) == (3, 1, 1)
    assert len(prompt.ids) == 12
    # one token less: the third passage no longer fits and the later one is dropped too,
    # even though it alone would fit (retrieval order is kept)
    prompt = build_prompt(render, lambda t: len(words(t)), PASSAGES, "a b", RagBudget(19, 2), 6)
    assert (prompt.passages_kept, prompt.passages_dropped, prompt.tokens_dropped) == (2, 2, 5)


def test_everything_fits_and_no_passages_is_fine() -> None:
    count = lambda t: len(words(t))  # noqa: E731
    assert build_prompt(render, count, PASSAGES, "a", RagBudget(100, 0), 10).passages_dropped == 0
    assert build_prompt(render, count, [], "a", RagBudget(100, 0), 10).passages_kept == 0


def test_a_question_that_cannot_fit_is_refused_with_the_numbers() -> None:
    with pytest.raises(InvalidRequest) as err:
        build_prompt(render, len, PASSAGES, "a b c d e", RagBudget(11, 2), 4)
    assert str(err.value) == (
        "rag_question: the prompt without passages is 6 tokens, over the budget of 5 = "
        "max_input_len 11 - max_tokens 4 - reserve 2"
    )


@pytest.mark.parametrize("variant", ["zero_shot", "few_shot"])
def test_shipped_templates_render_passages_in_order_and_the_question(variant: str) -> None:
    template = load_template(model_templates() / "preprocessing", variant)
    text = template.render(passages=["Alpha.", "Beta."], question="Which?")
    assert text.index("[1] Alpha.") < text.index("[2] Beta.") < text.index("Question: Which?")


def test_unknown_template_variant_is_refused() -> None:
    with pytest.raises(ValueError, match="rag_template must be one of zero_shot, few_shot"):
        load_template(model_templates() / "preprocessing", "chain_of_thought")


def test_empty_question_is_refused() -> None:
    rag = RagPreprocessor(None, RagBudget(10, 0), lambda text, chat: [], words)
    with pytest.raises(InvalidRequest, match="rag_question must not be empty"):
        rag.prompt(["p"], "  ", 4, True)
