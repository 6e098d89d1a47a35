"""The one error type of the farm, and how a command line reports it."""
from __future__ import annotations

import sys


class FarmError(Exception):
    """A problem the user can act on (bad cluster address, missing resource, board gone): one line."""


def fail(msg: str) -> int:
    """Print `error: msg` on stderr; the exit status of a failed farm command (2)."""
    print(f"error: {msg}", file=sys.stderr)
    return 2
