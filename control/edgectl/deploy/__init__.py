"""Putting artifacts in service: repository rendering, the local server, its supervisor, k8s."""
