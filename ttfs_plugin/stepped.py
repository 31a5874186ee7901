"""Module bases the snnTorch and Norse adapters share (framework-free).

Each adapter only adds its framework's calling convention (hidden state vs. explicit state) on
top of these; the semantics live in :mod:`ttfs_plugin.timestep`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .layers import TemporalKernel
from .simulation import is_ttfs_neuron
from .timestep import silent_zeros, synapse_step, windows


class SilentOutput(nn.Module):
    """A cached silent zero output for steps with nothing to do (see ``timestep.silent_zeros``)."""

    def _zeros_like(self, shape, like: Tensor) -> Tensor:
        self._zeros = silent_zeros(shape, like, getattr(self, "_zeros", None))
        return self._zeros


class SynapseBase(SilentOutput):
    """Carries the spikes of layer ``source_index`` into the next layer: a spike at local time
    ``k`` arrives as ``kappa(k)``, through the linear ``op`` (``None``: identity).

    The bias (taken from ``op`` when it has one) enters once, at the first step of the target's
    integration window. ``op`` runs only while the source fires; other steps return a silent
    zero tensor.
    """

    def __init__(self, kernel: TemporalKernel, source_index: int, op: nn.Module | None = None,
                 bias: Tensor | None = None) -> None:
        super().__init__()
        self.kernel = kernel
        self.source_index = int(source_index)
        op = op if op is not None else nn.Identity()
        last = op[-1] if isinstance(op, nn.Sequential) and len(op) else op
        if getattr(last, "bias", None) is not None:
            if bias is not None:
                raise ValueError("give the bias either inside op or as bias=, not both")
            bias = last.bias.detach().clone()
            last.bias = None
        self.op = op
        self.bias = nn.Parameter(bias.detach().clone()) if bias is not None else None

    def current(self, spikes: Tensor, step: int) -> Tensor:
        """The current at global ``step`` (silent zeros when idle)."""
        window, _ = windows(step, self.kernel.T)
        current = None
        if window == self.source_index + 1:  # else idle: not even the kernel table is built
            current = synapse_step(spikes, step, self.source_index, self.kernel.kernel(),
                                   self.op, self.bias)
        if current is None:
            current = self._zeros_like(self._output_shape(spikes), spikes)
        return current

    def _output_shape(self, spikes: Tensor) -> torch.Size:
        key = tuple(spikes.shape)
        if getattr(self, "_shape_key", None) != key:
            with torch.no_grad():
                self._shape = self.op(spikes[:1].new_zeros(1, *spikes.shape[1:])).shape[1:]
            self._shape_key = key
        return torch.Size((spikes.shape[0], *self._shape))

    def extra_repr(self) -> str:
        return f"source_index={self.source_index}"


def pooled_shape(spikes: Tensor, kernel_size: int) -> tuple[int, ...]:
    return (*spikes.shape[:-2], spikes.shape[-2] // kernel_size, spikes.shape[-1] // kernel_size)


def num_steps(net: nn.Module) -> int:
    """``(L+1)*T`` for a converted or hand-built network."""
    neurons = [m for m in net.modules() if is_ttfs_neuron(m)]
    if not neurons:
        raise ValueError("the network has no TTFS neuron")
    return (max(m.layer_index for m in neurons) + 2) * neurons[0].kernel.T
