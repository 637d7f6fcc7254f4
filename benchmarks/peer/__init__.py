"""Side-by-side benchmark against llama.cpp's llama-server (not part of the test suite)."""
