"""Host driver for DNPU bench boards: `Board.open(url)`, typed errors, and a CLI (`python -m host.board`)."""
from host.board.client import ELECTRODES, FLOAT32_SLACK_V, N_CHANNELS, Board, BoardOptions
from host.board.errors import (BoardDisconnected, BoardError, BoardOverflow, BoardTimeout,
                               IncompatibleBoard, LimitError, ProtocolError, RemoteError,
                               RemoteLimitError, RemoteSafeState, SafeStateError)

__all__ = ["Board", "BoardOptions", "ELECTRODES", "FLOAT32_SLACK_V", "N_CHANNELS", "BoardError", "ProtocolError",
           "IncompatibleBoard", "LimitError", "BoardTimeout", "BoardDisconnected", "SafeStateError",
           "BoardOverflow", "RemoteError", "RemoteLimitError", "RemoteSafeState"]
