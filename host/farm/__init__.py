"""The farm: many boards and machines through Ray (`python -m host.farm`).

    cluster   connecting to a Ray cluster (`local`, `ray://HOST:PORT`, `auto`): the only module
              that imports ray, and only inside its functions
    boards    one Ray actor per board, placed by a custom resource named after the board
    sampling  a sampling plan fanned out over boards of the same device, journalled, resumable
    tasks     `map_chunks`: independent chunks of work as Ray tasks, re-run when a worker dies
    ring      the ring experiment's trial search fanned out over the cluster's CPUs

Importing this package (or running any of its commands without --cluster) never imports ray.
See docs/farm.md.
"""
from host.farm.errors import FarmError

__all__ = ["FarmError"]
