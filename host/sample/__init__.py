"""Sampling a DNPU through a bench board: ``python -m host.sample`` (the CLI, `__main__`).

    plans    which electrode voltages to measure, in which order (within the board's limits)
    measure  measuring a plan on a board into a dataset folder, resumably
    store    the dataset folder: chunk files and metadata, written and read back checked
"""
