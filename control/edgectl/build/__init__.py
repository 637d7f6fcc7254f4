"""Turning checkpoints into served artifacts: recipes, sources, quantization, manifests, reports."""
