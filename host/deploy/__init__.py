"""Running trained DNPU networks headless: `python -m host.deploy --model FILE`.

Backends, all reading the same network ONNX file (core.network_onnx, format dnpu-network/1):

    core         the C engine (core.Network.from_onnx): one C call per batch
    onnxruntime  the file as it is, in onnxruntime
    board        the host runs the non-DNPU layers in numpy; each DNPU node runs on a bench board
                 (host.board) by time-multiplexing: ramp to the node's control voltages, stream
                 that node's electrode voltages for all samples, read the currents

See host/deploy/__main__.py for the command line and docs/model-format.md for the file.
"""
from host.deploy.runner import (BoardRun, DataSet, DeployError, evaluate_board, load_data, make_backend,
                                measure_latency, measure_throughput, node_volts, summarise)

__all__ = ["BoardRun", "DataSet", "DeployError", "evaluate_board", "load_data", "make_backend",
           "measure_latency", "measure_throughput", "node_volts", "summarise"]
