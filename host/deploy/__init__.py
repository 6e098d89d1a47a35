"""Running trained DNPU networks headless: `python -m host.deploy --model FILE`.

Backends, all reading the same network ONNX file (core.io, format dnpu-network/1):

    core         the C engine (core.io.load_network): one C call per batch
    onnxruntime  the file as it is, in onnxruntime
    board        the host runs the non-DNPU layers in numpy; each DNPU node runs on a bench board
                 (host.board) by time-multiplexing: ramp to the node's control voltages, stream
                 that node's electrode voltages for all samples, read the currents

Modules: data (the data set), engines (core, onnxruntime, timing), board_backend (the board),
errors. See host/deploy/__main__.py for the command line and docs/model-format.md for the file.
"""
from host.deploy.board_backend import BoardRun, evaluate_board, node_volts
from host.deploy.data import LabelledData, load_data
from host.deploy.engines import make_backend, measure_latency, measure_throughput
from host.deploy.errors import DeployError
from host.metrics import summarise

__all__ = ["BoardRun", "LabelledData", "DeployError", "evaluate_board", "load_data", "make_backend",
           "measure_latency", "measure_throughput", "node_volts", "summarise"]
