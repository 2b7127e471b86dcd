"""Datasets: the Speech Commands folder layout, CSV manifests, checks, the built-in corpus."""
