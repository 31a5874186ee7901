"""The roles a module can play, declared once (structural protocols), and helpers over them.

The library finds its modules by what they can do, never by a list of classes, so a user's own
module that fits a role is treated the same way:

* :class:`SpikingLayer` — a surrogate TTFS layer: its ``kernel``, per-forward ``count_spikes``,
  the ``spike_times`` of an input, and its ``firing_floor`` (the lowest input that spikes);
* :class:`SpikeProxy` — a TB batch norm: ``expected_spikes(floor, mode)``;
* :class:`KernelRegularised` — ``regularisation()``: a temporal kernel's ``L_TR`` term;
* :class:`Relaxable` — a layer stochastic relaxation acts on (``relax_probability``);
* :class:`Exportable` — a time-stepped module that describes itself as an export stage.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

from torch import Tensor, nn


@runtime_checkable
class SpikingLayer(Protocol):
    kernel: Any

    def count_spikes(self, *args, **kwargs) -> Any: ...

    def spike_times(self, z: Tensor) -> Tensor: ...

    def firing_floor(self) -> Tensor: ...


@runtime_checkable
class Counting(Protocol):
    """Anything whose spikes :class:`~ttfs_plugin.metrics.SpikeCounter` counts."""

    def count_spikes(self, *args, **kwargs) -> Any: ...


@runtime_checkable
class SpikeProxy(Protocol):
    def expected_spikes(self, floor: Tensor, mode: str) -> Tensor: ...


@runtime_checkable
class Firing(Protocol):
    """A neuron whose input spikes above ``firing_floor()`` (surrogate or time-stepped)."""

    def firing_floor(self) -> Tensor: ...


@runtime_checkable
class KernelRegularised(Protocol):
    def regularisation(self) -> Tensor: ...


@runtime_checkable
class TrainableKernel(Protocol):
    """A temporal kernel: its trainable ``tau``, ``td`` and its ``L_TR`` term."""

    tau: nn.Parameter
    td: nn.Parameter

    def regularisation(self) -> Tensor: ...


@runtime_checkable
class Relaxable(Protocol):
    relax_probability: float


@runtime_checkable
class Exportable(Protocol):
    def to_stage(self) -> Any: ...


def spiking_layers(network: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """``(name, module)`` of every surrogate spiking layer, in order."""
    modules: Iterator[tuple[str, nn.Module]] = network.named_modules()  # untyped in torch
    return ((n, m) for n, m in modules if isinstance(m, SpikingLayer))


def exportable_modules(network: nn.Module) -> list[nn.Module]:
    """The time-stepped modules of the plugin inside ``network``, in order."""
    return [m for m in network.modules() if isinstance(m, Exportable)]


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` in eval mode inside the block; its previous mode afterwards, even on error."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


__all__ = ["SpikingLayer", "Counting", "SpikeProxy", "Firing", "KernelRegularised",
           "TrainableKernel", "Relaxable", "Exportable", "spiking_layers", "exportable_modules",
           "eval_mode"]
