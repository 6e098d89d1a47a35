"""The one error type of the experiments, and how a command line reports it."""
from __future__ import annotations

import sys


class ExperimentError(Exception):
    """A problem the user can act on (bad file, bad option, board gone): printed, not traced."""


def fail(msg: str) -> int:
    """Print `error: msg` on stderr; the exit status for a usage or input error (2)."""
    print(f"error: {msg}", file=sys.stderr)
    return 2
