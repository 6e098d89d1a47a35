"""Connecting to a Ray cluster: the only module of the product that imports ray (inside functions).

    local            start a Ray cluster on this machine (its CPUs, GPUs and the boards named
                     on the command line as custom resources); it stops when the command ends
    ray://HOST:PORT  join a running cluster through its Ray client server (`ray start --head`
                     serves it on port 10001); its nodes declare their boards themselves
    auto             join the cluster `ray start` left running on this machine

A bad address fails within a few seconds with one line (`FarmError`), never a hang: ray:// is
checked with a plain TCP connection first, so an unreachable host or a closed port is refused
before Ray's own retries start.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Iterator

from host.farm.errors import FarmError

#: the Ray release this farm is built and tested against (pyproject's `farm` extra)
RAY_VERSION = "2.60.0"
#: custom resources that name a board start with this ("board:ttyACM0": 1 on its machine)
BOARD_RESOURCE_PREFIX = "board:"
#: the Ray namespace of the farm's jobs: named board actors are unique within it, cluster-wide
NAMESPACE = "dnpu-farm"
_RAY_URL = re.compile(r"^ray://(?P<host>\[[0-9a-fA-F:]+\]|[^:/\s]+):(?P<port>\d{1,5})/?$")


@dataclass(frozen=True)
class ClusterConfig:
    """Where the work goes, and what a local cluster offers."""

    address: str = "local"                        # local | ray://HOST:PORT | auto
    num_cpus: int | None = None                   # local: CPUs offered (None: all of this machine's)
    num_gpus: int | None = None                   # local: GPUs offered (None: Ray detects them)
    resources: dict[str, float] = field(default_factory=dict)   # local: custom resources (boards)
    object_store_mb: int = 200                    # local: shared-memory object store
    connect_timeout_s: float = 5.0                # ray://: TCP check before Ray's own connection
    #: local: niceness of the worker processes (None: Ray's own, which runs them below normal
    #: priority, so any other load on the machine comes first)
    worker_niceness: int | None = None

    def __post_init__(self) -> None:
        parse_address(self.address)
        if self.num_cpus is not None and self.num_cpus < 1:
            raise FarmError(f"--cpus must be >= 1, got {self.num_cpus}")
        if self.num_gpus is not None and self.num_gpus < 0:
            raise FarmError(f"--gpus must be >= 0, got {self.num_gpus}")
        if self.object_store_mb < 80:
            raise FarmError(f"the object store needs at least 80 MB, got {self.object_store_mb}")


def parse_address(text: str) -> tuple[str, str | None, int | None]:
    """('local' | 'auto' | 'ray', host, port) for a --cluster value; FarmError naming the problem."""
    t = (text or "").strip()
    if t in ("local", "auto"):
        return t, None, None
    m = _RAY_URL.match(t)
    if m is None:
        raise FarmError(f"--cluster {text!r}: expected local, auto or ray://HOST:PORT (e.g. ray://10.0.0.5:10001)")
    port = int(m.group("port"))
    if not 0 < port < 65536:
        raise FarmError(f"--cluster {text!r}: port {port} is not a TCP port")
    return "ray", m.group("host").strip("[]"), port


def import_ray() -> ModuleType:
    """ray itself, or FarmError saying how to install the pinned version."""
    try:
        import ray
    except ImportError:
        raise FarmError(f"--cluster needs Ray: .venv/bin/pip install ray=={RAY_VERSION} "
                        "(or pip install '.[farm]')") from None
    return ray


class Cluster:
    """A connection to a Ray cluster; use as a context manager (disconnects, and stops a local
    cluster, on exit). `ray` is the ray module, for the other farm modules."""

    def __init__(self, ray: ModuleType, config: ClusterConfig) -> None:
        self.ray = ray
        self.config = config

    @property
    def local(self) -> bool:
        return self.config.address == "local"

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.ray.is_initialized():
            self.ray.shutdown()

    def resources(self) -> dict[str, float]:
        """Total resources of the cluster (CPU, GPU, board:NAME, ...)."""
        return {k: float(v) for k, v in self.ray.cluster_resources().items()}

    def require(self, needed: dict[str, float]) -> None:
        """FarmError (one line) unless the cluster offers every resource in `needed`: work asking
        for a resource no node has would wait for ever."""
        have = self.resources()
        missing = [f"{k} (needs {v:g}, cluster has {have.get(k, 0):g})" for k, v in needed.items()
                   if have.get(k, 0.0) < v]
        if not missing:
            return
        boards = [k for k in needed if k.startswith(BOARD_RESOURCE_PREFIX) and have.get(k, 0.0) < needed[k]]
        hint = ""
        if boards:
            hint = (f"; start the node each board is plugged into with ray start --resources "
                    f"'{{\"{boards[0]}\": 1}}'")
        raise FarmError(f"the cluster at {self.config.address} lacks {', '.join(missing)}{hint}")

    def describe(self) -> dict[str, Any]:
        have = self.resources()
        return {"address": self.config.address, "cpus": have.get("CPU", 0.0), "gpus": have.get("GPU", 0.0),
                "nodes": len([n for n in self.ray.nodes() if n.get("Alive")]),
                "boards": sorted(k[len(BOARD_RESOURCE_PREFIX):] for k in have if k.startswith(BOARD_RESOURCE_PREFIX))}


def connect(config: ClusterConfig) -> Cluster:
    """Start or join the cluster `config` names; FarmError (one line) if that cannot be done."""
    kind, host, port = parse_address(config.address)
    if kind == "ray":
        assert host is not None and port is not None
        _check_reachable(config.address, host, port, config.connect_timeout_s)
    ray = import_ray()
    if ray.__version__ != RAY_VERSION:
        logging.getLogger(__name__).warning("Ray %s installed; the farm is tested with %s", ray.__version__, RAY_VERSION)
    if ray.is_initialized():
        raise FarmError("Ray is already initialised in this process: one farm connection at a time")
    common: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR}
    try:
        if kind == "local":
            with _environment({"RAY_worker_niceness": None if config.worker_niceness is None
                               else str(int(config.worker_niceness))}):
                ray.init(address="local", num_cpus=config.num_cpus, num_gpus=config.num_gpus,
                         resources=dict(config.resources) or None, include_dashboard=False,
                         object_store_memory=config.object_store_mb * 2 ** 20, namespace=NAMESPACE, **common)
        elif kind == "auto":
            ray.init(address="auto", namespace=NAMESPACE, **common)
        else:
            ray.init(address=config.address, namespace=NAMESPACE, **common)
    except FarmError:
        raise
    except Exception as e:  # ConnectionError, RuntimeError, grpc errors, ...: one line, not a trace
        _shutdown_quietly(ray)
        why = " ".join(str(e).split())[:300] or type(e).__name__
        raise FarmError(f"cannot {'start a local Ray cluster' if kind == 'local' else 'join the Ray cluster at ' + config.address}: {why}") from None
    return Cluster(ray, config)


@contextlib.contextmanager
def _environment(values: dict[str, str | None]) -> Iterator[None]:
    """Environment variables set (None: left as they are) while a local cluster starts: its
    processes read them then; this process's environment is restored after."""
    old = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is not None:
                os.environ[k] = v
        yield
    finally:
        for k, v in old.items():
            if values[k] is None:
                continue
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _check_reachable(address: str, host: str, port: int, timeout_s: float) -> None:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except socket.gaierror as e:
        raise FarmError(f"cannot join the Ray cluster at {address}: unknown host {host!r} ({e.strerror})") from None
    except (TimeoutError, socket.timeout):
        raise FarmError(f"cannot join the Ray cluster at {address}: no answer within {timeout_s:g} s") from None
    except OSError as e:
        raise FarmError(f"cannot join the Ray cluster at {address}: {e.strerror or e} "
                        "(is `ray start --head` running there, with its client server on that port?)") from None


def _shutdown_quietly(ray: ModuleType) -> None:
    try:
        if ray.is_initialized():
            ray.shutdown()
    except Exception:
        pass
