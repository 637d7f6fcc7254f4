"""How good and how fast a built artifact is: held-out perplexity and the quantization report."""
