"""A frozen surrogate for training through it, evaluated by the C core instead of torch.

Training control voltages only needs the surrogate's output and its gradient with respect to
its inputs (the weights are frozen). ``core.Surrogate.value_and_grad`` computes both in one
fused pass per block of samples that stays in cache, where torch runs every layer over the
whole batch, once forward and once backward, with a ReLU pass and its mask in between. Inside
autograd this module is a leaf function: forward returns the output and keeps dy/dv [n, 7];
backward multiplies it by the incoming gradient.

    sur = CoreSurrogate.from_torch(load_torch(path))
    out = sur(volts)           # [n, 7] -> [n, 1], differentiable in volts

Inside ``torch.autocast("cpu", dtype=torch.bfloat16)`` the gradient pass runs in bfloat16 AMX
tiles where the CPU has them (``core.Surrogate.value_and_grad(precision="bf16")``: the first layer,
which sees the volts, stays float32), else in float32; evaluation without gradients is float32.

The torch copy of the same weights serves tensors that are not on the CPU (a GPU run), so
callers need not care which one runs.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from core.electrodes import N_ELECTRODES


class _ValueAndGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, v: torch.Tensor, sur: Any, threads: int, precision: str) -> torch.Tensor:  # type: ignore[override]
        x = v.detach().to(torch.float32).contiguous().numpy()
        ctx.in_dtype = v.dtype
        if ctx.needs_input_grad[0]:
            y, g = sur.value_and_grad(x, threads=threads, precision=precision)
            ctx.save_for_backward(torch.from_numpy(g))
        else:
            y = sur.evaluate(x, threads=threads)
        return torch.from_numpy(y).unsqueeze(1)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:  # type: ignore[override]
        (g,) = ctx.saved_tensors
        return (grad_out.to(g.dtype) * g).to(ctx.in_dtype), None, None, None


class CoreSurrogate(nn.Module):
    """volts [n, 7] -> nA [n, 1] through the C core (float32 CPU tensors), else through `torch_model`.

    threads: core threads per call (None: torch's current ``torch.get_num_threads()``)."""

    def __init__(self, core_model: Any, torch_model: nn.Module, threads: int | None = None) -> None:
        super().__init__()
        if core_model.n_inputs != N_ELECTRODES or core_model.n_outputs != 1:
            raise ValueError(f"a DNPU surrogate maps {N_ELECTRODES} volts to 1 current, got {core_model.layer_sizes}")
        self.core = core_model
        self.torch_model = torch_model
        for p in self.torch_model.parameters():
            p.requires_grad_(False)
        self.threads = threads

    @classmethod
    def from_torch(cls, model: nn.Sequential, threads: int | None = None) -> "CoreSurrogate":
        """The same weights packed for the core (a Linear/ReLU chain as host.surrogate.torch_model builds)."""
        from core import Surrogate

        mods = list(model)
        lin = mods[0::2]
        if (not mods or len(mods) % 2 == 0 or not all(isinstance(m, nn.Linear) for m in lin)
                or not all(isinstance(m, nn.ReLU) for m in mods[1::2])):
            raise ValueError(f"expected a Linear, ReLU, ..., Linear chain, got {[type(m).__name__ for m in mods]}")
        core_model = Surrogate([m.weight.detach().cpu().numpy() for m in lin],
                               [m.bias.detach().cpu().numpy() if m.bias is not None else None for m in lin])
        return cls(core_model, model, threads)

    def __deepcopy__(self, memo: dict[int, Any]) -> "CoreSurrogate":
        # frozen weights: copies of a network (a stopped group of trials, the best trial) share them
        return self

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        if v.device.type != "cpu":
            return self.torch_model(v)
        threads = self.threads or torch.get_num_threads()
        return _ValueAndGrad.apply(v, self.core, threads, self.precision())

    def precision(self) -> str:
        """"bf16" inside a CPU bfloat16 autocast region where the core runs bf16 tiles, else "fp32"."""
        if (self.core.bf16_ready and torch.is_autocast_enabled("cpu")
                and torch.get_autocast_dtype("cpu") == torch.bfloat16):
            return "bf16"
        return "fp32"
