"""Surrogate models of a DNPU: training (torch), ONNX export with metadata, loading.

    onnx_file    the surrogate file: reading, validating and writing it without torch
    torch_model  the network as a torch module: building it, loading a file into torch, exporting it
    train        fitting the network to a measured dataset (torch)
    report       plots and a text summary of a training run
    __main__     the CLI: python -m host.surrogate train|curve|check|info
"""
