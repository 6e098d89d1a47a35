"""Typed exceptions of the board driver."""
from __future__ import annotations


class BoardError(Exception):
    """Anything that went wrong talking to a bench board."""


class ProtocolError(BoardError):
    """Malformed or unexpected data on the link, or an incompatible peer."""


class IncompatibleBoard(ProtocolError):
    """The board speaks another protocol version or message table (schema hash)."""


class LimitError(BoardError, ValueError):
    """A voltage outside the board's hard limits (raised before anything is sent, or by the board)."""


class BoardTimeout(BoardError, TimeoutError):
    """No valid answer within the timeout, after every retry."""


class BoardDisconnected(BoardError, ConnectionError):
    """The port went away (cable pulled, simulator killed)."""


class SafeStateError(BoardError):
    """The board latched its safe state (watchdog, port closed, SAFE); call `rearm()`."""


class BoardOverflow(BoardError):
    """The board's result FIFO overflowed: samples were lost, the sweep was aborted."""


class RemoteError(BoardError):
    """The board answered a request with ERROR."""

    def __init__(self, code: int, name: str, arg: int, text: str) -> None:
        super().__init__(f"board error {name} ({code}), arg {arg}: {text}")
        self.code, self.name, self.arg, self.text = code, name, arg, text


class RemoteLimitError(RemoteError, LimitError):
    """The board itself rejected a value outside its limits."""


class RemoteSafeState(RemoteError, SafeStateError):
    """The board refused a command because its safe state is latched."""
