"""RAG-style prompts from the corpus the benchmarks ship (passages, then a question)."""

from __future__ import annotations

import json

from tests.paths import REPO_ROOT

CORPUS = json.loads((REPO_ROOT / "benchmarks/data/rag_corpus.json").read_text(encoding="utf-8"))


def rag_prompt(index: int) -> str:
    """One question with its passages inlined, as a client without rag_* inputs would send."""
    item = CORPUS["questions"][index]
    passages = "\n".join(CORPUS["passages"][key] for key in item["passages"])
    return f"Passages:\n{passages}\n\nQuestion: {item['q']}"
