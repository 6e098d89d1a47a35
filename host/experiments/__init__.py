"""The paper's experiments: capacity, ring, Boolean gates (python -m host.experiments)."""
