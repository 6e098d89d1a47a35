"""Trial-batched classifiers on two inputs, T copies at once: one DNPU, a small neural network, and
feed-forward networks of DNPU layers (the ring's single DNPU, 2-1 and the paper's five-node 2-2-1).

The first two expose the same interface so the capacity and gate experiments train them identically:

    model(x [B, 2]) -> raw output [T, B]        (nA for a DNPU, a unitless activation for a NN)
    model.penalty() -> [T]                        (L1 outside the electrode ranges; 0 for a NN)
    model.decision                                batch norm with affine + logistic, per trial
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from host.networks import export
from host.networks.dnpu_nodes import DNPUNodes, InputTransform
from host.networks.normalisation import DecisionNode, RunningStandardisation


class TrialDNPUClassifier(nn.Module):
    """One DNPU with its inputs on two data electrodes (volts passed through unchanged, clipped to
    each data electrode's range)."""

    def __init__(self, surrogate: nn.Module, ranges_v: np.ndarray, trials: int,
                 data_electrodes: Sequence[int] = (1, 2), noise_std_na: float = 0.0,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        r = np.asarray(ranges_v, dtype=np.float64)
        de = list(data_electrodes)
        lo, hi = r[de, 0], r[de, 1]
        if np.allclose(lo, lo[0]) and np.allclose(hi, hi[0]):
            # one shared range: the transform is the identity on volts
            transform, self._unit = InputTransform(float(lo.max()), float(hi.min()), clip=True), None
        else:
            # ranges differ: volts become fractions of each electrode's range, mapped straight back
            transform = InputTransform(0.0, 1.0, clip=True)
            self._unit = (torch.as_tensor(lo, dtype=torch.float32), torch.as_tensor(hi - lo, dtype=torch.float32))
        self.dnpu = DNPUNodes(surrogate, r, 1, de, trials=trials, transform=transform,
                              noise_std_na=noise_std_na, generator=generator)
        self.decision = DecisionNode(trials)

    @property
    def trials(self) -> int:
        return self.dnpu.trials

    def set_noise(self, std_na: float) -> None:
        self.dnpu.noise_std_na = float(std_na)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._unit is not None:
            x = (x - self._unit[0]) / self._unit[1]
        return self.dnpu(x.unsqueeze(1))[..., 0]  # [T, B]

    def penalty(self) -> torch.Tensor:
        return self.dnpu.out_of_range_penalty()

    def keep_trials(self, idx: torch.Tensor) -> None:
        self.dnpu.keep_trials(idx)
        self.decision.keep_trials(idx)

    def solution(self) -> np.ndarray:
        """Control voltages [T, 5]."""
        return self.dnpu.control.detach().cpu().numpy()[:, 0, :].copy()


class TrialNNClassifier(nn.Module):
    """2 -> h logistic hidden units -> 1, T independent copies; inputs standardised by `scale`."""

    def __init__(self, hidden: int, trials: int, scale: float = 1.0, noise_std: float = 0.0,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        g = generator
        self.w1 = nn.Parameter(torch.randn(trials, 2, hidden, generator=g) * (1.0 / np.sqrt(2)))
        self.b1 = nn.Parameter(torch.randn(trials, 1, hidden, generator=g) * 0.5)
        self.w2 = nn.Parameter(torch.randn(trials, hidden, 1, generator=g) * (1.0 / np.sqrt(hidden)))
        self.scale = float(scale)
        self.noise_std = float(noise_std)
        self.decision = DecisionNode(trials)

    @property
    def trials(self) -> int:
        return int(self.w1.shape[0])

    def set_noise(self, std: float) -> None:
        self.noise_std = float(std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.sigmoid(torch.matmul(x.unsqueeze(0) * self.scale, self.w1) + self.b1)  # [T, B, h]
        out = torch.matmul(h, self.w2)[..., 0]
        if self.training and self.noise_std > 0:
            out = out + self.noise_std * torch.randn_like(out)
        return out

    def penalty(self) -> torch.Tensor:
        return torch.zeros(self.trials, device=self.w1.device)

    @torch.no_grad()
    def keep_trials(self, idx: torch.Tensor) -> None:
        for name in ("w1", "b1", "w2"):
            setattr(self, name, nn.Parameter(getattr(self, name).detach()[idx].clone()))
        self.decision.keep_trials(idx)


class DNPUNet(nn.Module):
    """A feed-forward network of DNPU layers, T independent copies (trials) at once.

    nodes=(1,) is a single DNPU, nodes=(2, 1) two nodes feeding one (three in all), nodes=(2, 2, 1)
    the paper's 2-2-1 (five). The data (n_inputs
    features in [in_lo, in_hi]) feed every node of the first layer on its data electrodes; the
    outputs of each layer are standardised (per trial and node) and mapped linearly from
    [-span, span] sigmas into the next layer's data-electrode ranges (clipped), and every node of
    the next layer sees all of them. ``forward`` returns the last layer's output in nA [T, B];
    ``standardised`` gives the input of the logistic output neuron. All nodes share one
    surrogate (one device, time-multiplexed), or ``surrogate`` is one list per layer of one
    surrogate per node (nodes on different chips); Gaussian noise of ``noise_std_na`` (times the
    node's ``noise_scale``, one list per layer, default 1) is added to every node output while
    training (and in eval when ``set_noise_in_eval(True)``).
    """

    def __init__(self, surrogate: nn.Module | Sequence[Sequence[nn.Module]], ranges_v: np.ndarray, trials: int, nodes: Sequence[int] = (2, 1),
                 data_electrodes: Sequence[int] = (1, 2), n_inputs: int = 2, in_range: tuple[float, float] = (-1.0, 1.0),
                 span_sigmas: float = 2.0, noise_std_na: float = 0.0, generator: torch.Generator | None = None,
                 noise_scale: Sequence[Sequence[float]] | None = None) -> None:
        super().__init__()
        de = tuple(int(e) for e in data_electrodes)
        fan_in = [n_inputs] + list(nodes[:-1])
        if any(f != len(de) for f in fan_in):
            raise ValueError(f"every layer's fan-in {fan_in} must equal the number of data electrodes {len(de)}")
        if not nodes or any(k < 1 for k in nodes):
            raise ValueError(f"nodes must be positive layer sizes, got {list(nodes)}")
        self.nodes, self.data_electrodes, self.span = tuple(int(k) for k in nodes), de, float(span_sigmas)
        self.in_range = (float(in_range[0]), float(in_range[1]))
        if not isinstance(surrogate, nn.Module) and len(surrogate) != len(self.nodes):
            raise ValueError(f"{len(surrogate)} lists of surrogates for {len(self.nodes)} layers")
        self.layers = nn.ModuleList()
        self.norms = nn.ModuleList()
        for i, k in enumerate(self.nodes):
            tr = (InputTransform(self.in_range[0], self.in_range[1], clip=True) if i == 0
                  else InputTransform(-self.span, self.span, clip=True))
            own = surrogate if isinstance(surrogate, nn.Module) else list(surrogate[i])
            self.layers.append(DNPUNodes(own, ranges_v, k, de, trials=trials, transform=tr,
                                         noise_std_na=noise_std_na, generator=generator,
                                         noise_scale=None if noise_scale is None else noise_scale[i]))
            self.norms.append(RunningStandardisation(trials, k))

    @property
    def trials(self) -> int:
        return self.layers[0].trials

    def set_noise(self, std_na: float) -> None:
        for layer in self.layers:
            layer.noise_std_na = float(std_na)

    def set_noise_in_eval(self, on: bool) -> None:
        for layer in self.layers:
            layer.noise_in_eval = bool(on)

    def _run(self, x: torch.Tensor, node_fn: Callable[[int, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != len(self.data_electrodes):
            raise ValueError(f"expected data [B, {len(self.data_electrodes)}], got {tuple(x.shape)}")
        h = x[None, :, None, :].expand(1, x.shape[0], self.nodes[0], x.shape[1])
        out = node_fn(0, h)
        for i in range(1, len(self.layers)):
            z = self.norms[i - 1](out)                                   # [T, B, K_prev]
            h = z.unsqueeze(2).expand(z.shape[0], z.shape[1], self.nodes[i], z.shape[2])
            out = node_fn(i, h)
        return out[..., 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, lambda i, h: self.layers[i](h))

    def standardised(self, out: torch.Tensor) -> torch.Tensor:
        """The last layer's output [T, B] standardised (input of the logistic output neuron)."""
        return self.norms[-1](out.unsqueeze(-1))[..., 0]

    def penalty(self) -> torch.Tensor:
        return sum(layer.out_of_range_penalty() for layer in self.layers)

    def clip_controls(self) -> None:
        for layer in self.layers:
            layer.clip_controls()

    def keep_trials(self, idx: torch.Tensor) -> None:
        for layer, norm in zip(self.layers, self.norms):
            layer.keep_trials(idx)
            norm.keep_trials(idx)

    @classmethod
    @torch.no_grad()
    def concat_trials(cls, nets: Sequence["DNPUNet"]) -> "DNPUNet":
        """One network holding the trials of `nets` (same architecture and surrogate), in order:
        candidates from different chunks trained on together (e.g. on a board, in one sweep)."""
        import copy

        if not nets:
            raise ValueError("concat_trials needs at least one network")
        first = nets[0]
        if any(n.nodes != first.nodes or n.data_electrodes != first.data_electrodes for n in nets):
            raise ValueError("concat_trials: the networks differ in architecture")
        out = copy.deepcopy(first)
        for i, (layer, norm) in enumerate(zip(out.layers, out.norms)):
            layer.control = nn.Parameter(torch.cat([n.layers[i].control.detach() for n in nets]).clone())
            layer.trials = int(layer.control.shape[0])
            norm.mean = torch.cat([n.norms[i].mean for n in nets]).clone()
            norm.var = torch.cat([n.norms[i].var for n in nets]).clone()
        return out

    @torch.no_grad()
    def calibrate(self, x: torch.Tensor) -> torch.Tensor:
        """Store each layer's exact output statistics over x (noise-free, eval); returns the output [T, B]."""
        was = self.training
        self.eval()
        noisy = [layer.noise_in_eval for layer in self.layers]
        self.set_noise_in_eval(False)

        def node(i: int, h: torch.Tensor) -> torch.Tensor:
            out = self.layers[i](h)
            self.norms[i].set_stats(out)
            return out

        out = self._run(x, node)
        for layer, n in zip(self.layers, noisy):
            layer.noise_in_eval = n
        self.train(was)
        return out

    @torch.no_grad()
    def measured(self, x: torch.Tensor, measure: Callable[..., np.ndarray], by_layer: bool = False) -> torch.Tensor:
        """Run trial 0 on a device, layer by layer: measure(volts [n, 7]) -> nA [n] gets every
        node's voltages of a layer as rows; with `by_layer`, measure(layer, volts [B, K, 7]) ->
        nA [B, K] gets them per node (for nodes on devices of their own). Returns nA [1, B].

        The stored (eval) standardisation links the layers, exactly as in the exported network."""
        was = self.training
        self.eval()

        def node(i: int, h: torch.Tensor) -> torch.Tensor:
            v = self.layers[i].electrode_volts(h)[:1]                    # [1, B, K, 7]
            if by_layer:
                cur = measure(i, v[0].double().numpy())
            else:
                cur = measure(v.reshape(-1, v.shape[-1]).double().numpy())
            return torch.as_tensor(np.asarray(cur, dtype=np.float32)).reshape(v.shape[:3])

        out = self._run(x, node)
        self.train(was)
        return out

    def controls(self, trial: int) -> list[np.ndarray]:
        """Control voltages of one trial, per layer [K, C]."""
        return [layer.control.detach()[trial].double().numpy().copy() for layer in self.layers]

    def to_core_layers(self, trial: int, logistic: tuple[float, float] | None = None) -> list[Any]:
        """The trial as core.network layer descriptions (torch-free), ending in the output logit.

        logistic = (w, b) of the output neuron on the standardised output (``fit_logistic``)."""
        layers: list[Any] = []
        for layer, norm in zip(self.layers, self.norms):
            fan_in = len(layer.data_electrodes)
            layers.append(export.dnpu_layer(layer, trial, inputs=[range(fan_in)] * layer.n_nodes))
            layers.append(export.standardisation(norm, trial))
        if logistic is not None:
            layers.append(export.logistic(*logistic))
        return layers
