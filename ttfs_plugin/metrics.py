"""Efficiency figures (SPEC §9): spikes, spike rate, sparsity, latency, normalised energy.

``S`` = spikes per sample over all spiking layers (input encoder included), ``N`` = their
neurons, ``T_total = (L+1)*T`` with ``L`` spiking layers:

* spike rate ``= S / (N * T_total)``; sparsity (spikes per neuron) ``= S / N``;
* normalised energy ``E = a_dyn * S/S_ref + a_st * T_total/T_ref`` (the paper's Table 2).

:class:`SpikeCounter` counts spikes with forward hooks on any module that has
``count_spikes(z)`` (our surrogate neurons), so it needs no list of layer types.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .errors import ConfigError, unknown_name
from .layers import AnalogInput
from .roles import Counting, eval_mode
from .synops import (
    OperationCosts,
    analog_input_macs,
    layer_synops,
    operation_figures,
    relu_twin_macs,
)


@dataclass(frozen=True)
class EnergyReference:
    """The network energies are normalised to: ``S_ref`` spikes per sample in ``T_ref`` steps."""

    spikes: float
    time_steps: float
    name: str = "custom"


#: TSC (Han & Roy 2020), the paper's reference.
ENERGY_REFERENCES = {
    "cifar10": EnergyReference(0.193e6, 512, "TSC CIFAR-10"),
    "cifar100": EnergyReference(0.170e6, 512, "TSC CIFAR-100"),
}
#: ``(a_dyn, a_st)`` per neuromorphic architecture.
HARDWARE_COEFFICIENTS = {"truenorth": (0.4, 0.6), "spinnaker": (0.64, 0.36)}


def energy_reference(spec: str | EnergyReference) -> EnergyReference:
    """``"cifar10"``, ``"cifar100"`` or ``"SPIKES,STEPS"`` (e.g. ``"1e5,512"``)."""
    if isinstance(spec, EnergyReference):
        return spec
    if spec in ENERGY_REFERENCES:
        return ENERGY_REFERENCES[spec]
    try:
        spikes, steps = (float(v) for v in spec.split(","))
    except ValueError:
        raise unknown_name("energy reference (or give 'SPIKES,STEPS')", spec,
                           ENERGY_REFERENCES) from None
    if not (0 < spikes < math.inf and 0 < steps < math.inf):
        raise ConfigError(f"energy reference values must be finite and > 0, got {spec!r}")
    return EnergyReference(spikes, steps)


def normalised_energy(spikes: float, time_steps: float, reference: EnergyReference,
                      a_dyn: float, a_st: float) -> float:
    """``a_dyn * S/S_ref + a_st * T_total/T_ref``."""
    return a_dyn * spikes / reference.spikes + a_st * time_steps / reference.time_steps


def efficiency_figures(layers: list[dict], T: int,
                       reference: str | EnergyReference = "cifar10",
                       time_steps: int | None = None) -> dict:
    """Totals and per-layer figures from ``[{"name", "neurons", "spikes_per_sample",
    "input"}, …]`` (``input``: the spiking input layer; optional). ``time_steps`` defaults to
    ``(len(layers) + 1) * T``; an analog-input network (whose input layer has a window but no
    spikes) passes its own. ``without_input`` holds the totals the authors report (the input
    layer left out); for an analog-input network they equal the totals."""
    if not layers:
        raise ConfigError("no spiking layers to report on (is this a ReLU network?)")
    reference = energy_reference(reference)
    time_steps = (len(layers) + 1) * T if time_steps is None else int(time_steps)
    per_layer = [
        dict(layer, input=bool(layer.get("input", False)),
             sparsity=layer["spikes_per_sample"] / layer["neurons"],
             spike_rate=layer["spikes_per_sample"] / (layer["neurons"] * time_steps))
        for layer in layers
    ]

    def totals(group: list[dict]) -> dict:
        spikes = sum(layer["spikes_per_sample"] for layer in group)
        neurons = sum(layer["neurons"] for layer in group)
        energy: dict[str, object] = {hw: normalised_energy(spikes, time_steps, reference, *c)
                                     for hw, c in HARDWARE_COEFFICIENTS.items()}
        return {"spikes_per_sample": spikes, "neurons": neurons,
                "sparsity": spikes / neurons if neurons else 0.0,
                "spike_rate": spikes / (neurons * time_steps) if neurons else 0.0,
                "energy": energy}

    result = totals(per_layer)
    result["energy"]["reference"] = {"name": reference.name, "spikes": reference.spikes,
                                     "time_steps": reference.time_steps}
    return {**result, "time_steps": time_steps,
            "without_input": totals([layer for layer in per_layer if not layer["input"]]),
            "per_layer": per_layer}


class SpikeCounter:
    """Context manager: counts spikes of every ``count_spikes`` module of ``network``.

    >>> with SpikeCounter(net) as counter:
    ...     net(x)
    >>> counter.layers()   # [{"name", "neurons", "spikes_per_sample"}, …]
    """

    def __init__(self, network: nn.Module,
                 synops: Callable[[str, Tensor], Tensor] | None = None) -> None:
        self.network = network
        self.synops = synops  # optional: synaptic events of a layer's spike map (synops.py)
        self._ops: dict[str, Tensor] = {}
        self._spikes: dict[str, Tensor] = {}
        self._neurons: dict[str, int] = {}
        self._samples: dict[str, int] = {}
        self._inputs: set[str] = set()
        self._handles: list = []

    def __enter__(self) -> "SpikeCounter":
        modules: Iterator[tuple[str, nn.Module]] = self.network.named_modules()
        for name, module in modules:
            if isinstance(module, Counting):
                self._handles.append(module.register_forward_hook(self._hook(name)))
                if getattr(module, "is_input_layer", False):
                    self._inputs.add(name)
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, name: str):
        def hook(module, inputs, output):
            z = inputs[0]
            spikes = module.count_spikes(z).sum().detach()
            self._spikes[name] = self._spikes.get(name, 0) + spikes
            self._neurons[name] = z[0].numel()
            self._samples[name] = self._samples.get(name, 0) + z.shape[0]
            if self.synops is not None:
                fired = z.detach() >= module.firing_floor().to(z.dtype)
                self._ops[name] = self._ops.get(name, 0) + self.synops(name, fired).sum()
        return hook

    def reset(self) -> None:
        self._spikes.clear()
        self._samples.clear()
        self._ops.clear()

    def synops_per_sample(self) -> dict[str, float]:
        """Synaptic events per sample of each layer (with ``synops`` given)."""
        return {name: float(total) / self._samples[name] for name, total in self._ops.items()}

    def layers(self) -> list[dict]:
        """Per-layer ``name``, ``neurons``, ``spikes_per_sample`` so far and ``input`` (the
        input encoder)."""
        return [{"name": name, "neurons": self._neurons[name],
                 "spikes_per_sample": float(total) / self._samples[name],
                 "input": name in self._inputs}
                for name, total in self._spikes.items()]

    def spikes_per_sample(self) -> float:
        return sum(layer["spikes_per_sample"] for layer in self.layers())


@torch.no_grad()
def evaluate(network: nn.Module, loader, device: str | torch.device = "cpu",
             reference: str | EnergyReference = "cifar10",
             costs: str | OperationCosts | None = None, operations: bool = True) -> dict:
    """Accuracy and, for a spiking network, the efficiency figures, over ``loader``: spikes,
    rates, normalised energy (SPEC §9) and, for a network the export plan can walk, synaptic
    operations, the ReLU twin's MACs and energy at per-operation ``costs`` (:mod:`.synops`;
    ``operations=False`` skips them, as the per-epoch validation does)."""
    correct = total = 0
    stages = _plan_or_none(network) if operations else None
    count = layer_synops(stages) if stages else None
    with eval_mode(network), SpikeCounter(network, count) as counter:
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            correct += (network(x).argmax(1) == y).sum().item()
            total += y.numel()
    if total == 0:
        raise ConfigError("the evaluation split holds no samples")
    result: dict = {"accuracy": correct / total, "samples": total}
    layers = counter.layers()
    if layers:
        T = window_length(network)
        # an analog input layer keeps its window (SPEC §8) without being a spiking layer
        slots = sum(isinstance(m, AnalogInput) for m in network.modules())
        result.update(efficiency_figures(layers, T, reference,
                                         time_steps=(len(layers) + 1 + slots) * T))
    if stages and layers:
        config: Any = network.config
        macs = relu_twin_macs(stages, tuple(config.in_shape))
        input_layer = next((layer["name"] for layer in layers if layer["input"]), None)
        result.update(operation_figures(counter.synops_per_sample(), macs, input_layer, costs,
                                        analog_input_macs(stages, macs)))
    return result


def _plan_or_none(network: nn.Module):
    """The export plan of a spiking ``TTFSNetwork`` (``None`` for anything else)."""
    from .export import ExportError, plan_network

    if not getattr(network, "is_spiking", False) or getattr(network, "config", None) is None:
        return None
    try:
        return plan_network(network)
    except ExportError:
        return None


def window_length(network: nn.Module) -> int:
    """The shared window ``T`` of a network: its config's, else its first temporal kernel's."""
    config = getattr(network, "config", None)
    if config is not None:
        return config.T
    for module in network.modules():
        kernel = getattr(module, "kernel", None)
        if kernel is not None and hasattr(kernel, "T"):
            return kernel.T
    raise ConfigError("the network has no TTFS neuron, so no time window T")
