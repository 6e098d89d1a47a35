"""Torch models of the MNIST experiment and their export to core.network layers.

Three kinds share one interface (``forward(x [B, 784]) -> logits [B, 10]``):

* ``LinearDNPUClassifier``: Linear 784 -> K*D (optionally without bias) feeding K DNPU nodes with D
  data electrodes each. Each node maps its D features into its data electrodes' ranges,
  ``v = clip(z * half_range + mid_range, lo, hi)`` (so z in [-1, 1] spans the range), holds
  learnable control voltages on the other electrodes (projected back into their ranges after
  every step), evaluates the frozen surrogate and emits ``I * a_k + b_k`` with a learnable
  output scale and offset per node: the class logit.
* ``ReceptiveFieldNN``: the same linear layer feeding K small MLPs (D -> H -> H -> 1, ReLU), one
  per class, each seeing only its own D features: the neural-network baseline with the same
  receptive fields.
* ``LinearSoftmax``: 784 -> 10.

``to_layers(model)`` turns a trained LinearDNPUClassifier into ``core.network`` layers (Linear,
DnpuLayer) for ``core.io.write_network``, through the one exporter ``host.networks.export``;
``from_layers`` is its inverse (the batch norm stays folded into the nodes' input maps), and
``load_network_model(path)`` reads a network file (models/mnist.onnx) back into the torch model
(on its own embedded surrogates unless they are given), e.g. to fine-tune it in the loop.

A classifier for a board of several chips has one surrogate per device: node k trains through
the surrogate of its device ``node_surrogates[k]`` (with that chip's own noise, ``noise_scale``),
and the exported file names that surrogate for the node, so deploy runs it on a device of its chip.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from core.electrodes import N_ELECTRODES, check_electrodes
from host.networks import export
from host.networks.dnpu_nodes import DNPUNodes, InputTransform

N_PIXELS = 784


@dataclass(frozen=True)
class ModelConfig:
    """What to build. kind: 'dnpu' | 'nn' | 'linear'."""

    kind: str = "dnpu"
    n_classes: int = 10
    data_electrodes: tuple[int, ...] = (0, 3, 4)
    bias: bool = False            # bias of the 784 -> K*D linear layer
    nn_hidden: int = 16           # ReceptiveFieldNN: width of its two hidden layers
    out_scale_init: float = 0.05  # DNPU: initial output scale (logit per nA)
    batchnorm: bool = True        # DNPU: batch-normalise the linear layer's outputs (folded into the nodes' input transform on export)
    span_sigmas: float = 2.0      # DNPU with batchnorm: +-span standard deviations initially span each electrode's range
    learn_mapping: bool = True    # DNPU: learnable per-node, per-electrode input scale and offset

    def __post_init__(self) -> None:
        if self.kind not in ("dnpu", "nn", "linear"):
            raise ValueError(f"kind must be 'dnpu', 'nn' or 'linear', got {self.kind!r}")
        object.__setattr__(self, "data_electrodes", check_electrodes(self.data_electrodes))


class LinearDNPUClassifier(nn.Module):
    """Linear 784 -> K*D feeding K DNPU nodes (``host.networks.dnpu_nodes.DNPUNodes``, one trial)."""

    def __init__(self, cfg: ModelConfig, surrogate: nn.Module | Sequence[nn.Module], ranges_v: np.ndarray,
                 node_surrogates: Sequence[int] | None = None, noise_scale: Sequence[float] | None = None) -> None:
        """surrogate: one module all nodes share (one chip), or one per node; node_surrogates: per
        node, the index of its surrogate in the exported file (its device; default 0 for all);
        noise_scale: per node, its chip's share of ``noise_std_na``."""
        super().__init__()
        self.cfg = cfg
        k, d = cfg.n_classes, len(cfg.data_electrodes)
        self.node_surrogates = [0] * k if node_surrogates is None else [int(i) for i in node_surrogates]
        if len(self.node_surrogates) != k or min(self.node_surrogates) < 0:
            raise ValueError(f"node_surrogates must be {k} indices >= 0, got {node_surrogates!r}")
        self.linear = nn.Linear(N_PIXELS, k * d, bias=cfg.bias)
        self.norm = nn.BatchNorm1d(k * d, affine=False) if cfg.batchnorm else None
        # with batch norm, +-span standard deviations of a linear output initially span the range
        span = cfg.span_sigmas if cfg.batchnorm else 1.0
        self.dnpu = DNPUNodes(surrogate, ranges_v, k, cfg.data_electrodes,
                              transform=InputTransform(-span, span, clip=True),
                              generator=torch.Generator().manual_seed(1234), control_init=(0.25, 0.5),
                              learn_mapping=cfg.learn_mapping, noise_scale=noise_scale)
        self.out_scale = nn.Parameter(torch.full((k,), float(cfg.out_scale_init)))
        self.out_bias = nn.Parameter(torch.zeros(k))

    @property
    def noise_std_na(self) -> float:
        return self.dnpu.noise_std_na

    @noise_std_na.setter
    def noise_std_na(self, value: float) -> None:
        self.dnpu.noise_std_na = float(value)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The linear layer's outputs (batch-normalised) per node [B, K, D]."""
        z = self.linear(x)
        if self.norm is not None:
            z = self.norm(z)
        return z.view(x.shape[0], self.cfg.n_classes, len(self.cfg.data_electrodes))

    def currents(self, x: torch.Tensor) -> torch.Tensor:
        """Node currents in nA [B, K]."""
        return self.dnpu(self.features(x))[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.currents(x) * self.out_scale + self.out_bias

    def range_penalty(self, x: torch.Tensor) -> torch.Tensor:
        """Mean L1 distance (V) of the data voltages outside their ranges (before clipping)."""
        return self.dnpu.data_range_penalty(self.features(x))

    def project(self) -> None:
        """Control voltages back into their electrodes' ranges (after every optimiser step)."""
        self.dnpu.clip_controls()

    def batchnorm_affine(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(a, b) [K, D] with normalised z = z_raw * a + b (eval statistics), or None without batch norm."""
        if self.norm is None:
            return None
        k, d = self.cfg.n_classes, len(self.cfg.data_electrodes)
        inv = torch.rsqrt(self.norm.running_var + self.norm.eps).view(k, d)
        return inv, -self.norm.running_mean.view(k, d) * inv


class ReceptiveFieldNN(nn.Module):
    """Linear 784 -> K*D, then per class an MLP D -> H -> H -> 1 on its own D features."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        k, d, h = cfg.n_classes, len(cfg.data_electrodes), cfg.nn_hidden
        self.linear = nn.Linear(N_PIXELS, k * d, bias=cfg.bias)
        g = torch.Generator().manual_seed(4321)

        def init(*shape: int, fan_in: int) -> nn.Parameter:
            return nn.Parameter(torch.randn(*shape, generator=g) * (2.0 / fan_in) ** 0.5)

        self.w1, self.b1 = init(k, d, h, fan_in=d), nn.Parameter(torch.zeros(k, h))
        self.w2, self.b2 = init(k, h, h, fan_in=h), nn.Parameter(torch.zeros(k, h))
        self.w3, self.b3 = init(k, h, fan_in=h), nn.Parameter(torch.zeros(k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.linear(x).view(x.shape[0], self.cfg.n_classes, -1)
        h = torch.relu(torch.einsum("bkd,kdh->bkh", z, self.w1) + self.b1)
        h = torch.relu(torch.einsum("bkh,khg->bkg", h, self.w2) + self.b2)
        return torch.einsum("bkh,kh->bk", h, self.w3) + self.b3

    def project(self) -> None:
        pass


class LinearSoftmax(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.linear = nn.Linear(N_PIXELS, cfg.n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)

    def project(self) -> None:
        pass


def build(cfg: ModelConfig, surrogate: nn.Module | Sequence[nn.Module] | None = None,
          ranges_v: np.ndarray | None = None, node_surrogates: Sequence[int] | None = None,
          noise_scale: Sequence[float] | None = None) -> nn.Module:
    if cfg.kind == "dnpu":
        if surrogate is None or ranges_v is None:
            raise ValueError("a DNPU classifier needs the surrogate and its electrode ranges")
        return LinearDNPUClassifier(cfg, surrogate, ranges_v, node_surrogates, noise_scale)
    if cfg.kind == "nn":
        return ReceptiveFieldNN(cfg)
    return LinearSoftmax(cfg)


def to_layers(model: LinearDNPUClassifier) -> list:
    """The trained classifier as core.network layers: [Linear, DnpuLayer] (logits = node outputs);
    each node names its surrogate (``node_surrogates``: the file's surrogate list is one per device)."""
    import dataclasses

    from core.network import Linear

    with torch.no_grad():
        W = model.linear.weight.detach().cpu().double().numpy()
        b = None if model.linear.bias is None else model.linear.bias.detach().cpu().double().numpy()
        dnpu = export.dnpu_layer(model.dnpu, 0, input_affine=model.batchnorm_affine(),
                                 output_scale=model.out_scale.tolist(), output_offset=model.out_bias.tolist())
    dnpu = dataclasses.replace(dnpu, nodes=tuple(dataclasses.replace(n, surrogate=i)
                                                 for n, i in zip(dnpu.nodes, model.node_surrogates)))
    return [Linear(W, b), dnpu]


class NetworkFileError(ValueError):
    """A network file that is not an MNIST classifier this module can rebuild; the message says why."""


def from_layers(layers: Sequence, surrogate: nn.Module | Sequence[nn.Module], ranges_v: np.ndarray,
                source: str = "network") -> LinearDNPUClassifier:
    """The inverse of ``to_layers``: core.network layers [Linear 784 -> K*D, DnpuLayer of K nodes]
    (a file written by the MNIST experiment, core.io.read_network) as a LinearDNPUClassifier that
    computes what the file computes. The batch normalisation was folded into each node's input map
    on export, so the rebuilt model has none (``batchnorm=False``) and a learnt map per node.

    surrogate: the frozen torch module volts [n, 7] -> nA [n, 1] the nodes evaluate, or a list of
    them that the nodes index (``DnpuNode.surrogate``: the file's surrogates, one per device);
    ranges_v [7, 2]: their electrode ranges, which must be the nodes' clip bounds."""
    from core.network import DnpuLayer, Linear

    if len(layers) != 2 or not isinstance(layers[0], Linear) or not isinstance(layers[1], DnpuLayer):
        raise NetworkFileError(f"{source}: expected [Linear, DnpuLayer] (the MNIST classifier), got "
                               f"{[type(layer).__name__ for layer in layers]}")
    lin, dl = layers
    W = np.array(lin.weight, dtype=np.float32)
    nodes = list(dl.nodes)
    k = len(nodes)
    data = tuple(int(e) for e in nodes[0].data_electrodes) if nodes else ()
    d = len(data)
    if k < 1 or W.ndim != 2 or W.shape != (k * d, N_PIXELS):
        raise NetworkFileError(f"{source}: the linear layer is {list(W.shape)}; {k} nodes of {d} data electrodes "
                               f"need [{k * d}, {N_PIXELS}]")
    ranges = np.asarray(ranges_v, dtype=np.float64)
    lo, hi = ranges[list(data), 0], ranges[list(data), 1]
    mods = [surrogate] if isinstance(surrogate, nn.Module) else list(surrogate)
    for i, nd in enumerate(nodes):
        where = f"{source}: node {i}"
        if tuple(int(e) for e in nd.data_electrodes) != data:
            raise NetworkFileError(f"{where}: data electrodes {tuple(nd.data_electrodes)} differ from node 0's {data}")
        if nd.inputs is not None and tuple(int(j) for j in nd.inputs) != tuple(range(i * d, (i + 1) * d)):
            raise NetworkFileError(f"{where}: reads features {tuple(nd.inputs)}, not its own {d} consecutive ones")
        if not 0 <= int(nd.surrogate) < len(mods):
            raise NetworkFileError(f"{where}: uses surrogate {nd.surrogate}; "
                                   f"{len(mods)} surrogate{'s are' if len(mods) > 1 else ' is'} given")
        n_lo = np.broadcast_to(np.asarray(nd.input_low, dtype=np.float64), (d,))
        n_hi = np.broadcast_to(np.asarray(nd.input_high, dtype=np.float64), (d,))
        if not (np.allclose(n_lo, lo, atol=1e-6) and np.allclose(n_hi, hi, atol=1e-6)):
            raise NetworkFileError(f"{where}: its inputs are clipped to [{n_lo.tolist()}, {n_hi.tolist()}], not to the "
                                   f"surrogate's electrode ranges [{lo.tolist()}, {hi.tolist()}]")
        if len(np.asarray(nd.control_voltages).reshape(-1)) != N_ELECTRODES - d:
            raise NetworkFileError(f"{where}: {len(np.asarray(nd.control_voltages).reshape(-1))} control voltages "
                                   f"for {N_ELECTRODES - d} control electrodes")
    cfg = ModelConfig(kind="dnpu", n_classes=k, data_electrodes=data, bias=lin.bias is not None,
                      batchnorm=False, learn_mapping=True)
    index = [int(nd.surrogate) for nd in nodes]
    per_node = mods[0] if len(mods) == 1 else [mods[i] for i in index]
    model = LinearDNPUClassifier(cfg, per_node, ranges, node_surrogates=index)
    with torch.no_grad():
        model.linear.weight.copy_(torch.as_tensor(W))
        if lin.bias is not None:
            model.linear.bias.copy_(torch.as_tensor(np.array(lin.bias, dtype=np.float32).reshape(-1)))
        def vec(a: object, n: int) -> torch.Tensor:
            return torch.tensor(np.broadcast_to(np.asarray(a, np.float64).reshape(-1), (n,)), dtype=torch.float32)

        for i, nd in enumerate(nodes):
            model.dnpu.map_scale[i] = vec(nd.input_scale, d)
            model.dnpu.map_offset[i] = vec(nd.input_offset, d)
            model.dnpu.control[0, i] = vec(nd.control_voltages, N_ELECTRODES - d)
            model.out_scale[i] = float(nd.output_scale)
            model.out_bias[i] = float(nd.output_offset)
    return model.eval()


def load_network_model(path: str | Path, surrogate: nn.Module | Sequence[nn.Module] | None = None,
                       ranges_v: np.ndarray | None = None) -> tuple[LinearDNPUClassifier, dict]:
    """A network file of the MNIST experiment (models/mnist.onnx) as a torch model, and the file's
    metadata. surrogate / ranges_v: None takes the file's own surrogates (one per device) and
    their electrode ranges, which must agree."""
    import json

    from core.io import read_network

    try:
        nf = read_network(path)
    except (OSError, ValueError) as e:
        raise NetworkFileError(f"{path}: {e}") from None
    if nf.n_inputs != N_PIXELS:
        raise NetworkFileError(f"{path}: {nf.n_inputs} inputs, an MNIST network has {N_PIXELS}")
    if ranges_v is None:
        found = []
        for i in range(len(nf.surrogates)):
            meta = nf.surrogate_metadata[i] if i < len(nf.surrogate_metadata or []) else {}
            try:
                r = np.asarray(json.loads(meta["dnpu.electrode_ranges_v"]), dtype=np.float64)
                found.append(r.reshape(N_ELECTRODES, 2))
            except (KeyError, TypeError, ValueError) as e:
                raise NetworkFileError(f"{path}: its surrogate {i}'s metadata holds no electrode ranges ({e})") from None
        if any(not np.array_equal(r, found[0]) for r in found[1:]):
            raise NetworkFileError(f"{path}: its surrogates have different electrode ranges; give ranges_v")
        ranges_v = found[0]
    if surrogate is None:
        surrogate = [surrogate_module(s) for s in nf.surrogates]
    return from_layers(nf.layers, surrogate, ranges_v, source=str(path)), dict(nf.metadata)


def surrogate_module(sur) -> nn.Sequential:
    """A core.Surrogate (a network file's embedded one) as a frozen torch Linear/ReLU chain, in nA."""
    mods: list[nn.Module] = []
    n = len(sur.weights)
    for i, (w, b, relu) in enumerate(zip(sur.weights, sur.biases, sur.relu)):
        w = np.array(w, dtype=np.float32)
        m = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
        scale = float(sur.amplification) if i == n - 1 else 1.0
        with torch.no_grad():
            m.weight.copy_(torch.as_tensor(w) * scale)
            if b is not None:
                m.bias.copy_(torch.as_tensor(np.array(b, dtype=np.float32)) * scale)
        mods.append(m)
        if relu:
            mods.append(nn.ReLU())
    model = nn.Sequential(*mods)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def params_count(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


def state_to_numpy(model: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model (another layout or configuration)."""


def load_numpy_state(model: nn.Module, state: dict[str, np.ndarray] | Sequence) -> None:
    """Load a state saved by ``state_to_numpy``; a state of another layout is refused by name.

    (Checkpoints written before the MNIST DNPU nodes became ``DNPUNodes`` hold top-level
    ``control``/``map_scale`` entries where the model now has ``dnpu.control``/``dnpu.map_scale``.)"""
    sd = {k: torch.as_tensor(np.asarray(v)) for k, v in dict(state).items()}
    want = model.state_dict()
    missing, unexpected = sorted(set(want) - set(sd)), sorted(set(sd) - set(want))
    if missing or unexpected:
        raise CheckpointError(f"the checkpoint does not fit this model (written by another version or model?): "
                              f"missing {missing[:4]}{' ...' if len(missing) > 4 else ''}, "
                              f"unexpected {unexpected[:4]}{' ...' if len(unexpected) > 4 else ''}")
    bad = [k for k in want if tuple(want[k].shape) != tuple(sd[k].shape)]
    if bad:
        raise CheckpointError(f"the checkpoint does not fit this model: shapes differ for {bad[:4]}")
    model.load_state_dict(sd)
