"""edgectl: build, deploy and drive LLM serving on NVIDIA Triton at edge sites."""

__version__ = "0.1.0"
