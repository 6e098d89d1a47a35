"""Surrogate models of a DNPU: training (torch), ONNX export with metadata, loading.

`host.surrogate.onnx_file` reads and validates surrogate files without torch;
`host.surrogate.train` (torch) fits, exports and loads them back as frozen modules.
"""
