"""The total loss of the paper's Eq. 9 and the two network-wide terms it adds.

``loss = CE + lambda_w*||W||^2 + lambda_TR*L_TR + lambda_TB*L_TB`` where

* ``L_TR = sum_l (tau_l - tau_l0)^2 + (td_l - td_l0)^2`` over every temporal kernel (SPEC §6);
* ``L_TB = sum_l S_l``, the expected spikes per sample of every TB batch norm that feeds a TTFS
  neuron (SPEC §7).

Both walk ``network.modules()`` by protocol, not by type: a module with ``regularisation()`` is a
temporal kernel; one with ``expected_spikes(floor, mode)`` is a TB batch norm, paired with the
next module that has ``firing_floor()`` (a TTFS neuron) — or, when a neuron holds its batch norm
itself as ``neuron.norm`` (the snnTorch and Norse adapters), with that neuron. So they also work
on networks built natively from the adapters' modules.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..functional import check_spike_proxy_mode
from ..roles import Firing, KernelRegularised, SpikeProxy, TrainableKernel

WEIGHT_OPS = (nn.Conv1d, nn.Conv2d, nn.Linear)


def kernel_regularisation_loss(network: nn.Module) -> Tensor:
    """``L_TR`` of every temporal kernel in ``network`` (0 if it has none).

    Kernels that hold ``tau``, ``td``, ``tau0``, ``td0`` of one dtype and device (every kernel of
    this library) are done in one vectorised term, ``sum (tau - tau0)^2 + (td - td0)^2`` over
    stacked values, instead of a few small ops per layer; any other ``regularisation()`` is
    called as it is."""
    kernels = [m for m in network.modules() if isinstance(m, KernelRegularised)]
    stacked = [m for m in kernels if all(isinstance(getattr(m, name, None), Tensor)
                                         for name in ("tau", "td", "tau0", "td0"))]
    terms = [m.regularisation() for m in kernels if m not in stacked]
    if stacked and len({(m.tau.dtype, m.tau.device) for m in stacked}) == 1:
        tau, td, tau0, td0 = (torch.stack([getattr(m, name) for m in stacked])
                              for name in ("tau", "td", "tau0", "td0"))
        terms.append(((tau - tau0) ** 2 + (td - td0) ** 2).sum())
    else:
        terms += [m.regularisation() for m in stacked]
    return torch.stack(terms).sum() if terms else torch.zeros(())


def _x_T(neuron: nn.Module) -> Tensor:
    """``kappa(T) = exp(-(T - td)/tau)`` of the kernel of ``neuron`` (the authors' TB term)."""
    kernel: Any = neuron if isinstance(neuron, TrainableKernel) else neuron.kernel
    return torch.exp(-(kernel.T - kernel.td) / kernel.effective_tau())


def spike_proxy_loss(network: nn.Module, mode: str = "exact", weighting: str = "auto"
                     ) -> Tensor:
    """``L_TB = sum_l S_l`` over TB batch norms, each paired with the neuron it feeds."""
    check_spike_proxy_mode(mode)

    def term(norm, neuron) -> Tensor:
        x_T = _x_T(neuron) if mode == "authors" else None
        return norm.expected_spikes(neuron.firing_floor(), mode, x_T, weighting)

    terms: list[Tensor] = []
    pending = None
    owned: set[int] = set()  # norms a neuron applies itself (time-stepped adapters)
    for module in network.modules():
        norm = getattr(module, "norm", None)
        if isinstance(module, Firing) and isinstance(norm, SpikeProxy):
            terms.append(term(norm, module))
            owned.add(id(norm))
            pending = None
        elif id(module) in owned:
            continue
        elif isinstance(module, SpikeProxy):
            pending = module
        elif pending is not None and isinstance(module, Firing):
            terms.append(term(pending, module))
            pending = None
        elif isinstance(module, WEIGHT_OPS):
            pending = None  # a weight op in between: this batch norm feeds no neuron directly
    return torch.stack(terms).sum() if terms else torch.zeros(())


def weight_l2(network: nn.Module) -> Tensor:
    """``||W||^2`` over the weights of every conv and linear layer (not biases, not BN)."""
    terms = [m.weight.pow(2).sum() for m in network.modules() if isinstance(m, WEIGHT_OPS)]
    return torch.stack(terms).sum() if terms else torch.zeros(())


def total_loss(logits: Tensor, target: Tensor, network: nn.Module, *, lambda_w: float = 0.0,
               lambda_tr: float = 0.0, lambda_tb: float = 0.0,
               tb_mode: str = "exact", tb_weighting: str = "auto", with_parts: bool = True
               ) -> tuple[Tensor, dict[str, float]]:
    """Eq. 9; returns the loss and its parts (as floats, for logging). ``with_parts=False``
    leaves the parts out (an empty dict): reading each one is a device synchronisation on a GPU,
    which the trainer does not pay every step."""
    ce = F.cross_entropy(logits, target)
    loss = ce
    parts: dict[str, Tensor] = {"ce": ce}
    if lambda_w:
        l2 = weight_l2(network)
        loss = loss + lambda_w * l2
        parts["l2"] = l2
    if lambda_tr:
        tr = kernel_regularisation_loss(network).to(ce.device)
        loss = loss + lambda_tr * tr
        parts["tr"] = tr
    if lambda_tb:
        tb = spike_proxy_loss(network, tb_mode, tb_weighting).to(ce.device)
        loss = loss + lambda_tb * tb
        parts["tb"] = tb
    return loss, ({name: part.item() for name, part in parts.items()} if with_parts else {})
