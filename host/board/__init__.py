"""Host driver for DNPU bench boards: `Board.open(url)`, typed errors, and a CLI (`python -m host.board`).

Importing it registers the `sim://` pyserial URL handler (`host.board.urlhandler`), so
`serial.serial_for_url("sim://?seed=3")` opens a simulated board like any port.
"""
import serial

from host.board.errors import (BoardDisconnected, BoardError, BoardOverflow, BoardTimeout,
                               IncompatibleBoard, LimitError, ProtocolError, RemoteError,
                               RemoteLimitError, RemoteSafeState, SafeStateError)
from host.board.instrument import Board, BoardOptions, DeviceView
from host.board.limits import FLOAT32_SLACK_V, check_volts

URL_HANDLERS = "host.board.urlhandler"
if URL_HANDLERS not in serial.protocol_handler_packages:
    serial.protocol_handler_packages.append(URL_HANDLERS)

__all__ = ["Board", "BoardOptions", "DeviceView", "FLOAT32_SLACK_V", "check_volts", "BoardError", "ProtocolError",
           "IncompatibleBoard", "LimitError", "BoardTimeout", "BoardDisconnected", "SafeStateError",
           "BoardOverflow", "RemoteError", "RemoteLimitError", "RemoteSafeState"]
