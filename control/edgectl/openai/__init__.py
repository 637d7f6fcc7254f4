"""The OpenAI-compatible HTTP gateway in front of a Triton LLM ensemble (`edgectl openai serve`)."""
