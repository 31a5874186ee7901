"""Synaptic operations and energy at per-operation costs: the figures users compare across papers.

* **SynOps** of a spiking layer = the synaptic events its spikes cause: every spike times its
  fan-out into the next weight op (through first-spike max-pooling, avg-pooling and flatten, as
  the time-stepped network routes it). In a TTFS network each event is one accumulate (AC).
* **MACs** of the ReLU twin = the multiply-accumulates of the same architecture run as a DNN
  (every weight op, dense, once per sample).
* **Energy** at documented per-operation costs (:class:`OperationCosts`; default 45 nm, 32-bit
  floating point, Horowitz 2014: AC 0.9 pJ, MAC 4.6 pJ): ``SynOps·E_AC`` for the SNN and
  ``MACs·E_MAC`` for the ReLU twin.

Both counts walk the export plan (:func:`ttfs_plugin.export.plan_network` or the stages of an
exported network), so the surrogate and the simulators count the same events.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import ConfigError
from .export import MaxPoolStage, NeuronStage, Stage, SynapseStage


@dataclass(frozen=True)
class OperationCosts:
    """Energy per operation in picojoules (default: 45 nm, fp32; Horowitz, ISSCC 2014)."""

    ac_pj: float = 0.9
    mac_pj: float = 4.6
    name: str = "45 nm fp32 (Horowitz 2014)"

    def __post_init__(self) -> None:
        for value in (self.ac_pj, self.mac_pj):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"operation costs must be finite numbers > 0 pJ, got "
                                  f"AC {self.ac_pj!r}, MAC {self.mac_pj!r}")

    @classmethod
    def parse(cls, spec: str | OperationCosts | None) -> OperationCosts:
        """``None`` (the default), an :class:`OperationCosts`, or ``"AC,MAC"`` in pJ."""
        if spec is None:
            return cls()
        if isinstance(spec, OperationCosts):
            return spec
        try:
            ac, mac = (float(v) for v in spec.split(","))
        except ValueError:
            raise ConfigError(f"operation costs must be 'AC,MAC' in pJ (e.g. '0.9,4.6'), got "
                              f"{spec!r}") from None
        return cls(ac, mac, "custom")


def _parts(op: nn.Module) -> list[nn.Module]:
    return list(op) if isinstance(op, nn.Sequential) else [op]


def _events(part: nn.Module, x: Tensor) -> Tensor:
    """``part`` with every weight 1 and no bias: each output counts the inputs that reach it."""
    if isinstance(part, nn.Conv2d):  # the module itself is never changed (it may be a user's)
        ones = torch.ones(part.weight.shape, dtype=x.dtype, device=x.device)
        return F.conv2d(x, ones, None, part.stride, part.padding, part.dilation, part.groups)
    if isinstance(part, nn.Linear):
        return x.sum(1, keepdim=True).expand(-1, part.out_features)
    if isinstance(part, nn.AvgPool2d):  # a sum: every input spike reaches its pooled unit
        return F.avg_pool2d(x, part.kernel_size, part.stride, part.padding, part.ceil_mode,
                            part.count_include_pad, divisor_override=1)
    return part(x)  # flatten, identity: routing only


def _routes(stages: list[Stage]) -> dict[str, tuple[int | None, SynapseStage]]:
    """For each neuron layer: the max-pool after it (kernel size or ``None``) and its synapse."""
    routes: dict[str, tuple[int | None, SynapseStage]] = {}
    for i, stage in enumerate(stages):
        if not isinstance(stage, NeuronStage):
            continue
        pool = None
        for later in stages[i + 1:]:
            if isinstance(later, MaxPoolStage):
                pool = later.kernel_size
            elif isinstance(later, SynapseStage) and later.source == stage.index:
                routes[stage.name] = (pool, later)
                break
            elif isinstance(later, NeuronStage):
                break
    return routes


def layer_synops(stages: list[Stage]) -> Callable[[str, Tensor], Tensor]:
    """``count(name, spikes)`` → synaptic events per sample of layer ``name``'s spike map
    ``spikes`` (``(B, …)``, 1 where a neuron spikes; the spiking output layer has none)."""
    routes = _routes(stages)

    def count(name: str, spikes: Tensor) -> Tensor:
        if name not in routes:
            return torch.zeros(spikes.shape[0], dtype=torch.float64)
        pool, synapse = routes[name]
        # counts per output stay far below 2**24, so float32 holds them exactly; the sum is
        # taken in float64
        x = spikes.to(torch.float32)
        if pool is not None:
            x = F.max_pool2d(x, pool)  # a pooled unit passes one spike if any input spikes
        for part in _parts(synapse.op):
            x = _events(part, x)
        return x.flatten(1).to(torch.float64).sum(1)
    return count


def synaptic_operations(stages: list[Stage], spike_times: dict[str, Tensor], T: int
                        ) -> dict[str, float]:
    """SynOps per sample of each layer, from spike times (``T`` = no spike), batch mean."""
    count = layer_synops(stages)
    return {name: count(name, (times < T)).mean().item() for name, times in spike_times.items()}


def relu_twin_macs(stages: list[Stage], input_shape: tuple[int, ...]) -> dict[str, int]:
    """Multiply-accumulates per sample of each weight op of the same network as a DNN."""
    macs: dict[str, int] = {}
    shape = tuple(input_shape)
    with torch.no_grad():
        for stage in stages:
            if isinstance(stage, MaxPoolStage):
                shape = (shape[0], shape[1] // stage.kernel_size, shape[2] // stage.kernel_size)
            elif isinstance(stage, SynapseStage):
                weights = [p for p in stage.op.parameters()]
                x = torch.zeros(1, *shape, dtype=weights[0].dtype if weights else torch.float32,
                                device=weights[0].device if weights else None)
                total = 0
                for part in _parts(stage.op):
                    out = part(x)
                    if isinstance(part, nn.Conv2d):
                        per_output = part.weight[0].numel()  # C_in/groups · kh · kw
                        total += out[0].numel() * per_output
                    elif isinstance(part, nn.Linear):
                        total += part.in_features * part.out_features
                    x = out
                macs[stage.name] = total
                shape = tuple(x.shape[1:])
    return macs


def analog_input_macs(stages: list[Stage], macs: dict[str, int]) -> int:
    """MACs per sample of the first weight op when layer 0 relays the analog image (an
    analog-input network): real values times weights, so multiply-accumulates, not spike
    events; 0 for a network whose input layer spikes."""
    if not any(isinstance(st, NeuronStage) and st.relay for st in stages):
        return 0
    first = next(st for st in stages if isinstance(st, SynapseStage) and st.source == 0)
    return macs[first.name]


def operation_figures(synops: dict[str, float], macs: dict[str, int], input_layer: str | None,
                      costs: str | OperationCosts | None = None, input_macs: int = 0) -> dict:
    """The JSON block ``synaptic_operations`` / ``relu_twin_macs`` / ``energy_pj``.
    ``input_layer``: the spiking input layer's name (``None``: analog input, whose first weight
    op costs ``input_macs`` MACs, added to the SNN's energy)."""
    costs = OperationCosts.parse(costs)
    total = sum(synops.values())
    total_macs = sum(macs.values())
    hidden = total - synops.get(input_layer, 0.0) if input_layer else total
    snn_pj = total * costs.ac_pj + input_macs * costs.mac_pj
    return {
        "synaptic_operations": {"per_sample": total, "per_sample_without_input": hidden,
                                "per_layer": synops, "analog_input_macs": input_macs},
        "relu_twin_macs": {"per_sample": total_macs, "per_layer": macs},
        "energy_pj": {"snn": snn_pj, "relu_twin": total_macs * costs.mac_pj,
                      "snn_over_relu_twin": snn_pj / (total_macs * costs.mac_pj)
                      if total_macs else None,
                      "costs": {"name": costs.name, "ac_pj": costs.ac_pj,
                                "mac_pj": costs.mac_pj}},
    }


__all__ = ["OperationCosts", "layer_synops", "synaptic_operations", "relu_twin_macs",
           "analog_input_macs", "operation_figures"]
