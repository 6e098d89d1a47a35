"""The deploy error: bad model, data or arguments."""
from __future__ import annotations


class DeployError(ValueError):
    """Bad model, data or arguments; the message says what is wrong (exit status 2)."""
