"""Fast inference core (placeholder while building the skeleton)."""
