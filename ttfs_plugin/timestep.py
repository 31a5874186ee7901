"""Time-stepped TTFS semantics (SPEC §8) as pure step functions, shared by every adapter.

Global step ``g``; window ``w = g // T``; local time ``k = g % T``. Spiking layer ``l``
integrates during window ``l`` and fires during window ``l+1``; the readout integrates during
window ``L`` and is read at its end, after ``(L+1)*T`` steps.

* :func:`neuron_step` — IF neuron without leak, decaying threshold ``thr[k]``, fires once;
* :func:`synapse_step` — a spike at local time ``k`` reaches the next weight op as ``kappa(k)``;
  the bias enters once, at the first step of the target's integration window;
* :func:`first_spike_pool_step` — max-pooling of spikes: the pooled unit emits at the earliest
  spike among its inputs, once.

Each function does work only in its layer's windows. A module with nothing to emit returns a
*silent* zero tensor (:func:`silent_zeros`, tagged so that the next module can skip its work
without looking at the values), so a simulation costs about one weight op per time step and
active layer.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SpikeFn = Callable[[Tensor], Tensor]


class NeuronState(NamedTuple):
    """State of a TTFS neuron layer: membrane, who has fired, and the global step."""

    mem: Tensor
    fired: Tensor  # bool
    step: int


def heaviside(v: Tensor) -> Tensor:
    """``1`` where ``v >= 0``: the exact firing rule ``u >= thr[k]`` (as ``u - thr[k] >= 0``)."""
    return (v >= 0).to(v.dtype)


def straight_through(spike_grad: SpikeFn) -> SpikeFn:
    """Exact Heaviside forward, ``spike_grad`` 's surrogate derivative backward.

    Framework surrogates (snnTorch's ``atan``, Norse's ``super``) fire on ``v > 0``; TTFS fires
    on ``u >= thr``. This keeps the exact rule and borrows only their gradient.
    """

    def spike(v: Tensor) -> Tensor:
        if not v.requires_grad:
            return heaviside(v)
        soft = spike_grad(v)
        return heaviside(v.detach()) + (soft - soft.detach())

    return spike


def silent_zeros(shape, like: Tensor, cache: Tensor | None = None) -> Tensor:
    """A zero tensor tagged as silent (reusing ``cache`` when it fits). Never write to it."""
    if (cache is None or cache.shape != torch.Size(shape) or cache.dtype != like.dtype
            or cache.device != like.device):
        cache = like.new_zeros(shape)
        cache._ttfs_silent = True
    return cache


def is_silent(x: Tensor) -> bool:
    """True for a tensor made by :func:`silent_zeros` (all zeros, nothing to compute)."""
    return getattr(x, "_ttfs_silent", False)


def windows(step: int, T: int) -> tuple[int, int]:
    """``(window, local time)`` of global step ``step``."""
    return divmod(step, T)


def neuron_step(current: Tensor, state: NeuronState, layer_index: int, thresholds: Tensor,
                spike_fn: SpikeFn = heaviside, zeros: Tensor | None = None,
                norm: Callable[[Tensor], Tensor] | None = None) -> tuple[Tensor, NeuronState]:
    """One step of a TTFS neuron layer; returns ``(spikes, new_state)``.

    Integrate window (``w == layer_index``): ``mem += current``. Fire window
    (``w == layer_index + 1``): spike where ``mem >= thr[k]`` and not fired before.
    ``norm`` (e.g. a TB batch norm in a natively built network) is applied once to the
    integrated membrane, at the first step of the fire window. ``zeros`` (optional) is returned
    as the spike tensor of silent steps, saving an allocation.
    """
    T = thresholds.shape[0]
    window, k = windows(state.step, T)
    mem, fired = state.mem, state.fired
    if window == layer_index + 1:
        if k == 0 and norm is not None:
            mem = norm(mem)
        threshold = thresholds[k].to(mem.dtype)
        if mem.requires_grad:
            v = mem - threshold
            crossed = v.detach() >= 0
            spikes = spike_fn(v) * (~fired).to(mem.dtype)
        else:  # simulation fast path: boolean ops only, one conversion
            crossed = mem >= threshold
            spikes = (crossed & ~fired).to(mem.dtype)
        fired = fired | crossed
    else:
        if window == layer_index and not is_silent(current):
            mem = mem + current
        spikes = zeros if zeros is not None else torch.zeros_like(mem)
    return spikes, NeuronState(mem, fired, state.step + 1)


def initial_neuron_state(like: Tensor) -> NeuronState:
    """Zero membrane, nobody fired, step 0, for inputs shaped like ``like``."""
    return NeuronState(torch.zeros_like(like), torch.zeros_like(like, dtype=torch.bool), 0)


def synapse_step(spikes: Tensor, step: int, source_index: int, kernel: Tensor,
                 op: nn.Module, bias: Tensor | None) -> Tensor | None:
    """Current into the next layer at ``step``, or ``None`` when there is none (no work done).

    Active while the source layer fires (window ``source_index + 1``): the current is
    ``op(spikes) * kappa(k)`` (``op`` linear without bias), plus ``bias`` once at ``k = 0``.
    """
    T = kernel.shape[0]
    window, k = windows(step, T)
    if window != source_index + 1 or (is_silent(spikes) and (k > 0 or bias is None)):
        return None
    current = op(spikes) * kernel[k].to(spikes.dtype)
    if k == 0 and bias is not None:
        current = current + bias.to(spikes.dtype).view(1, -1, *([1] * (current.dim() - 2)))
    return current


def first_spike_pool_step(spikes: Tensor, emitted: Tensor | None, kernel_size: int
                          ) -> tuple[Tensor, Tensor]:
    """Max-pool spikes; a pooled unit passes only its first spike. Returns ``(out, emitted)``."""
    pooled = F.max_pool2d(spikes, kernel_size)
    if emitted is None:
        emitted = torch.zeros_like(pooled, dtype=torch.bool)
    out = pooled * (~emitted).to(pooled.dtype)
    return out, emitted | (out.detach() > 0)


def total_steps(num_spiking_layers: int, T: int) -> int:
    """Latency ``(L+1)*T`` of a network with ``L`` spiking layers (input encoder included)."""
    return (num_spiking_layers + 1) * T
