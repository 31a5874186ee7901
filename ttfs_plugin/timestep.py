"""Time-stepped TTFS semantics (SPEC §8) as pure step functions over all-tensor state.

Global step ``g``; window ``w = g // T``; local time ``k = g % T``. Spiking layer ``l``
integrates during window ``l`` and fires during window ``l+1``; the readout integrates during
window ``L`` and is read at its end, after ``(L+1)*T`` steps (a spiking output layer ``L`` fires
during window ``L+1``: ``(L+2)*T`` steps).

* :func:`neuron_step` — IF neuron without leak, decaying threshold ``thr[k]``, fires once; layer 0
  (the input layer) takes an analog impulse at step 0 or a first-spike train during window 0;
* :func:`synapse_step` — a spike at local time ``k`` reaches the next weight op as ``kappa(k)``;
  the bias enters once, at the first step of the target's integration window;
* :func:`first_spike_pool_step` — max-pooling of spikes: the pooled unit emits at the earliest
  spike among its inputs, once;
* :func:`readout_step` — the output membrane integrates its current (the logits).

Every state is a NamedTuple of tensors; ``step`` is a 0-dim int64 tensor kept on the CPU (no
device sync when a layer asks for its window). A module with nothing to emit returns a *silent*
zero tensor (:func:`silent_zeros`, tagged so that the next module can skip its work without
looking at the values), so a simulation costs about one weight op per time step and active layer.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import InputShapeError
from .layers import check_intensities

SpikeFn = Callable[[Tensor], Tensor]

#: How layer 0 receives its input: one analog current impulse at step 0 (the surrogate's
#: encoder), or a first-spike train during window 0 (a spike at local time ``k`` is the input
#: neuron's spike at ``k``; it is passed on during window 1, the encoder's own fire window).
INPUT_MODES = ("analog", "spikes")


class InputTimingError(InputShapeError):
    """Input given at a step where the input layer takes none (or two spikes for one neuron)."""


class NeuronState(NamedTuple):
    """State of a TTFS neuron layer: membrane, who has fired (bool) and the global step."""

    mem: Tensor
    fired: Tensor
    step: Tensor  # 0-dim int64 on the CPU


class SynapseState(NamedTuple):
    """State of a temporal-kernel synapse: the global step."""

    step: Tensor


class PoolState(NamedTuple):
    """State of a first-spike max-pool: which pooled units have emitted (bool)."""

    emitted: Tensor


class ReadoutState(NamedTuple):
    """State of the readout: its membrane (the logits)."""

    mem: Tensor


_STEPS: list[Tensor] = []


def step_tensor(value: int = 0) -> Tensor:
    """The 0-dim CPU int64 tensor every state keeps its global step in.

    Shared from a cache (a run makes one per step, not one per module and step); they are
    inference tensors, so an in-place change raises instead of corrupting other states.
    """
    value = int(value)
    if value >= len(_STEPS):
        with torch.inference_mode():
            _STEPS.extend(torch.tensor(i, dtype=torch.long)
                          for i in range(len(_STEPS), max(2 * value, 1024)))
    return _STEPS[value]


def next_step(step: Tensor) -> Tensor:
    """``step + 1`` as a cached step tensor."""
    return step_tensor(int(step) + 1)


def check_input_mode(mode: str) -> str:
    if mode not in INPUT_MODES:
        from .errors import unknown_name

        raise unknown_name("input mode", mode, INPUT_MODES)
    return mode


def heaviside(v: Tensor) -> Tensor:
    """``1`` where ``v >= 0``: the exact firing rule ``u >= thr[k]`` (as ``u - thr[k] >= 0``)."""
    return (v >= 0).to(v.dtype)


def straight_through(spike_grad: SpikeFn | None) -> SpikeFn:
    """Exact Heaviside forward, ``spike_grad`` 's surrogate derivative backward.

    Framework surrogates (snnTorch's ``atan``, Norse's ``super``) fire on ``v > 0``; TTFS fires
    on ``u >= thr``. This keeps the exact rule and borrows only their gradient. ``None``: no
    gradient through the spike (snnTorch's ``surrogate_disable=True``).
    """

    def spike(v: Tensor) -> Tensor:
        if spike_grad is None or not v.requires_grad:
            return heaviside(v.detach() if spike_grad is None else v)
        soft = spike_grad(v)
        return heaviside(v.detach()) + (soft - soft.detach())

    return spike


def silent_zeros(shape, like: Tensor, cache: Tensor | None = None) -> Tensor:
    """A zero tensor tagged as silent (reusing ``cache`` when it fits). Never write to it."""
    if (cache is None or cache.shape != torch.Size(shape) or cache.dtype != like.dtype
            or cache.device != like.device):
        cache = like.new_zeros(shape)
        cache._ttfs_silent = True  # type: ignore[attr-defined]  # a tag in its __dict__
    return cache


def is_silent(x: Tensor) -> bool:
    """True for a tensor made by :func:`silent_zeros` (all zeros, nothing to compute)."""
    return getattr(x, "_ttfs_silent", False)


def windows(step: int | Tensor, T: int) -> tuple[int, int]:
    """``(window, local time)`` of global step ``step``."""
    return divmod(int(step), T)


def as_current(x: Tensor, dtype: torch.dtype) -> Tensor:
    """A dense float tensor of ``dtype`` from a float, int, bool or sparse input."""
    if not isinstance(x, Tensor):
        raise InputShapeError(f"expected a torch.Tensor, got {type(x).__name__}")
    if x.layout != torch.strided:
        x = x.to_dense()
    if x.dtype != dtype:
        if x.is_complex():
            raise InputShapeError(f"input must be real, got {x.dtype}")
        x = x.to(dtype)
    return x


def input_allowed(step: int, T: int, input_mode: str) -> bool:
    """Whether the input layer takes input at ``step`` (analog: step 0; spikes: window 0)."""
    return step == 0 if input_mode == "analog" else step < T


def check_input_timing(x: Tensor, step: int, T: int, input_mode: str) -> None:
    """Raise :class:`InputTimingError` for non-zero input where the input layer takes none."""
    if not is_silent(x) and not input_allowed(step, T, input_mode) and bool((x != 0).any()):
        raise _timing_error(step, T, input_mode)


def _timing_error(step: int, T: int, input_mode: str) -> InputTimingError:
    when = ("one current impulse at step 0, then zeros (feed torch.zeros_like(x) after the "
            "first step)" if input_mode == "analog" else
            f"a first-spike train during steps 0…{T - 1}, then zeros")
    return InputTimingError(
        f"the input layer got non-zero input at step {step}; its input is {when}. If this is a "
        "new batch, start a new run first: ttfs_plugin.snntorch.reset(net) (snntorch.utils.reset "
        "starts one only after all ttfs_plugin.snntorch.num_steps(net) steps) or state=None in "
        "Norse")


def neuron_step(current: Tensor, state: NeuronState, layer_index: int, thresholds: Tensor,
                spike_fn: SpikeFn = heaviside, zeros: Tensor | None = None,
                norm: Callable[[Tensor], Tensor] | None = None,
                input_mode: str = "analog", check_range: bool = False, relay: bool = False
                ) -> tuple[Tensor, NeuronState]:
    """One step of a TTFS neuron layer; returns ``(spikes, new_state)``.

    Integrate window (``w == layer_index``): ``mem += current``. Fire window
    (``w == layer_index + 1``): spike where ``mem >= thr[k]`` and not fired before.
    ``norm`` (e.g. a TB batch norm in a natively built network) is applied once to the
    integrated membrane, at the first step of the fire window. ``zeros`` (optional) is returned
    as the spike tensor of silent steps, saving an allocation.

    Layer 0 checks when its input arrives (:data:`INPUT_MODES`): analog, ``mem = x`` at step 0,
    where ``x`` must be finite, and with ``check_range`` (the input layer of a converted or
    loaded network) within ``[0, 1]`` (one pass over ``x``, once per run); spikes, a spike at
    local time ``k`` of window 0 sets ``mem = thr[k]``, so the layer fires at exactly ``k`` in
    window 1 (a train made by ``encode`` gives the analog result bit for bit; values other than
    0/1 are refused).

    ``relay`` (layer 0 of an analog-input network, SPEC §8): no spikes; at the first step of the
    fire window the layer passes its integrated input on unchanged (the synapse weighs it by
    ``kappa(0) = 1``, the relay's kernel having ``td = 0``), and nothing afterwards.

    Backward, a spike has ``spike_fn`` 's derivative at ``v = mem - thr[k]`` whenever ``v``
    needs a gradient (through the membrane or through ``tau``, ``td`` in the table), whatever
    the input's ``requires_grad``.
    """
    T = thresholds.shape[0]
    step = int(state.step)
    window, k = windows(step, T)
    mem, fired = state.mem, state.fired
    if layer_index == 0:
        check_input_timing(current, step, T, input_mode)
        if step == 0 and input_mode == "analog" and not is_silent(current):
            check_intensities(current, check_range)  # once per run, where the input arrives
    if window == layer_index + 1 and relay:
        spikes = mem if k == 0 else (zeros if zeros is not None else torch.zeros_like(mem))
    elif window == layer_index + 1:
        if k == 0 and norm is not None:
            mem = norm(mem)
        threshold = thresholds[k].to(mem.dtype)
        if torch.is_grad_enabled() and (mem.requires_grad or threshold.requires_grad):
            v = mem - threshold
            crossed = v.detach() >= 0
            spikes = spike_fn(v) * (~fired).to(mem.dtype)
        else:  # simulation fast path: boolean ops only, one conversion
            crossed = mem >= threshold
            spikes = (crossed & ~fired).to(mem.dtype)
        fired = fired | crossed
    else:
        if window == layer_index and not is_silent(current):
            if layer_index == 0 and input_mode == "spikes":
                mem = _receive_spikes(current, mem, thresholds[k].to(mem.dtype), step)
            else:
                mem = mem + current
        spikes = zeros if zeros is not None else torch.zeros_like(mem)
    return spikes, NeuronState(mem, fired, next_step(state.step))


def layer_step(current: Tensor, state: NeuronState, layer_index: int, T: int,
               thresholds: Callable[[], Tensor], spike_fn: SpikeFn = heaviside,
               zeros: Tensor | None = None, norm: Callable[[Tensor], Tensor] | None = None,
               input_mode: str = "analog", check_range: bool = False, relay: bool = False
               ) -> tuple[Tensor, NeuronState]:
    """:func:`neuron_step` that does no work outside the layer's two windows: ``thresholds``
    (a callable, e.g. ``kernel.thresholds``, of a table of length ``T``) is built only when the
    layer is active."""
    if state.mem.shape != current.shape:
        raise InputShapeError(
            f"state of shape {tuple(state.mem.shape)} given with input of shape "
            f"{tuple(current.shape)}; start a new batch with a fresh state (None)")
    step = int(state.step)
    window, _ = windows(step, T)
    if window not in (layer_index, layer_index + 1):
        if layer_index == 0:
            check_input_timing(current, step, T, input_mode)
        return (zeros if zeros is not None else torch.zeros_like(state.mem),
                state._replace(step=next_step(state.step)))
    return neuron_step(current, state, layer_index, thresholds(), spike_fn, zeros, norm,
                       input_mode, check_range, relay)


def _receive_spikes(spikes: Tensor, mem: Tensor, threshold: Tensor, step: int) -> Tensor:
    """Window 0 of a spike-train input: remember each neuron's first spike as ``thr[k]``."""
    if bool(((spikes != 0) & (spikes != 1)).any()):
        raise InputShapeError(f"spike-train input must be 0 or 1 (bool, int or float); step "
                              f"{step} holds other values")
    spiking = spikes > 0
    if bool((spiking & (mem > 0)).any()):
        raise InputTimingError(f"an input neuron spiked twice (again at step {step}); a "
                               "first-spike train has at most one spike per neuron")
    return torch.where(spiking, threshold.detach(), mem)


def initial_neuron_state(like: Tensor) -> NeuronState:
    """Zero membrane, nobody fired, step 0, for inputs shaped like ``like``."""
    return NeuronState(torch.zeros_like(like), torch.zeros_like(like, dtype=torch.bool),
                       step_tensor(0))


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


def readout_step(current: Tensor, mem: Tensor | None) -> Tensor:
    """The readout membrane after integrating ``current`` (silent current: unchanged)."""
    if mem is None or mem.shape != current.shape:
        mem = torch.zeros_like(current)
    return mem if is_silent(current) else mem + current


def total_steps(num_spiking_layers: int, T: int) -> int:
    """Latency ``(L+1)*T`` of a network with ``L`` spiking layers (input encoder included)."""
    return (num_spiking_layers + 1) * T
