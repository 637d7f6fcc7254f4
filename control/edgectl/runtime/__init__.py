"""The only code Triton models import: contract, tokenization, engine loop, gates."""
