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
* :func:`readout_step` — the output membrane integrates its current (the logits);
* :func:`window_synapse_step` — the opt-in window-batched synapse: one weight op per window on
  the decoded spike values (same spike times and predictions; the membrane moves only at the
  window's last step).

Fast exact path (on by default, :func:`reference_path` turns it off): a layer's membrane does not
change during its fire window, and ``thr`` decreases, so the step-by-step rule ``u >= thr[k]``
fires each neuron at ``t = encode(u, thr)`` (:func:`ttfs_plugin.kernel.encode`, the same float
comparison). :func:`fire_times` computes ``t`` once when the fire window opens; each step then
emits ``t == k``, first-spike max-pooling pools the times once per window
(:func:`pooled_times`), and the simulation's recorder reads ``t`` instead of scanning spikes.
The results are the step-by-step rule's bit for bit; it is taken only where that is provable (no
gradient needed, a non-increasing table, the state the previous step returned), else the
reference rule runs.

Every state is a NamedTuple of tensors; ``step`` is a 0-dim int64 tensor kept on the CPU (no
device sync when a layer asks for its window). A module with nothing to emit returns a *silent*
zero tensor (:func:`silent_zeros`, tagged so that the next module can skip its work without
looking at the values), so a simulation costs about one weight op per time step and active layer.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Callable, Iterator, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import InputShapeError
from .kernel import decode, encode
from .layers import check_intensities
from .ops import spike_time_dtype
from .ops.event_synapse import weight_op

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


_NO_VALUE = torch.zeros(0)  # "nothing held" in a state field (states hold tensors only)


class SynapseState(NamedTuple):
    """State of a temporal-kernel synapse: the global step. A window-batched synapse also holds,
    during its source's fire window, the decoded input so far (``value``) and the spike times
    it will decode at the window's end (``times``, seen since step ``since``); empty else."""

    step: Tensor
    value: Tensor = _NO_VALUE
    times: Tensor = _NO_VALUE
    since: Tensor = _NO_VALUE


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


_FAST = [True]


@contextmanager
def reference_path() -> Iterator[None]:
    """Run the step-by-step reference rules inside (no spike-time fast path, no table cache).

    The fast path must equal them bit for bit; this keeps them reachable, for the tests that
    show it and for anyone who wants to see the rules run literally.
    """
    previous = _FAST[0]
    _FAST[0] = False
    try:
        yield
    finally:
        _FAST[0] = previous


def fast_paths_enabled() -> bool:
    """False inside :func:`reference_path`."""
    return _FAST[0]


class SpikeTimes(NamedTuple):
    """What a fast-path spike tensor carries (as its ``_ttfs_times`` tag): it is ``times == k``.

    ``times`` (:func:`ttfs_plugin.ops.spike_time_dtype`: uint8 for ``T < 256``): the local time
    at which each unit spikes, ``T`` never (again); ``k`` the local time of this step;
    ``version`` the spike tensor's version counter when tagged.
    """

    times: Tensor
    k: int
    T: int
    version: int | None


def spike_times_of(spikes: Tensor) -> SpikeTimes | None:
    """The :class:`SpikeTimes` tag of a fast-path spike tensor, else ``None``; also ``None``
    once the tensor was written in place (a user's ``spk.mul_(mask)``): it is then no longer
    ``times == k``, and the next module reads its values."""
    tag = getattr(spikes, "_ttfs_times", None)
    return tag if tag is not None and _unwritten(spikes, tag.version) else None


def _version(x: Tensor) -> int | None:
    """``x``'s version counter (0 while ``torch.compile`` traces, see :func:`_unwritten`;
    ``None`` for an inference tensor, which has none)."""
    if torch.compiler.is_compiling():
        return 0
    return None if x.is_inference() else x._version


def _unwritten(x: Tensor, version: int | None) -> bool:
    """Whether ``x`` is unchanged since its version counter read ``version``. (Not checked
    while ``torch.compile`` traces: a traced graph has no in-place writes of its own to see,
    and reading the counter there would add a guard and a recompilation per step. Not
    checkable for an inference tensor: the tensors handed out, see :func:`_countable`, are
    never those.)"""
    return torch.compiler.is_compiling() or version is None or x._version == version


def _countable():
    """A context in which new tensors get a version counter: under ``torch.inference_mode``
    they would not, and a write into an output handed to the user could not be seen."""
    return torch.inference_mode(False) if torch.is_inference_mode_enabled() else nullcontext()


def _emit(times: Tensor, k: int, T: int, fired: Tensor, dtype: torch.dtype
          ) -> tuple[Tensor, Tensor]:
    """``(spikes, fired | spikes)`` at local time ``k`` of a window whose spike times are
    ``times``: spikes ``times == k`` in ``dtype``, tagged with the times. (A byte comparison
    into bytes, viewed as bool: comparisons that write bool, and bool-to-float copies, are
    several times slower on the CPU. Not under ``torch.compile``: inductor's C++ code for a
    byte-to-bool view does not compile in torch 2.14, and it fuses the plain ops anyway.)"""
    with _countable():
        if times.dtype == torch.uint8 and not torch.compiler.is_compiling():
            hit = torch.eq(times, k, out=torch.empty_like(times))
            spikes, now = hit.to(dtype), hit.view(torch.bool)
        else:
            now = times == k
            spikes = now.to(dtype)
        fired = fired | now
    spikes._ttfs_times = SpikeTimes(times, k, T, _version(spikes))  # type: ignore[attr-defined]
    return spikes, fired


def non_increasing(thresholds: Tensor) -> bool:
    """Whether ``thresholds`` never increases (NaN: no): ``encode`` is then the first-crossing
    rule. The table cache tags its tables with the answer; other tables are checked here."""
    tag = getattr(thresholds, "_ttfs_monotone", None)
    if tag is None:
        table = thresholds.detach()
        tag = bool((table[1:] <= table[:-1]).all()) and not bool(torch.isnan(table[:1]).any())
    return tag


def fire_times(mem: Tensor, fired: Tensor, thresholds: Tensor, k: int) -> Tensor:
    """Spike times of a fire window from local time ``k`` on (:func:`spike_time_dtype`: a byte
    for ``T < 256``, so a per-step ``times == k`` is one vectorised byte comparison whose result
    is already the bool mask): with ``mem`` fixed and ``thr`` non-increasing, an unfired neuron
    spikes at ``max(encode(mem, thr), k)``; a fired one never again (``T``). The step-by-step
    rule's spikes, bit for bit."""
    T = thresholds.shape[0]
    t = encode(mem, thresholds, spike_time_dtype(T))
    if k > 0:
        t = t.clamp_min_(k)
    return t.masked_fill_(fired, T)


class _FireTag(NamedTuple):
    """What the ``fired`` mask of a fire-window step keeps (as its ``_ttfs_fire`` tag): the
    spike times and what they were computed from, with the version counters to see writes."""

    mem: Tensor
    mem_version: int | None
    thresholds: Tensor
    times: Tensor
    k: int
    fired_version: int | None


class _PoolTag(NamedTuple):
    """What a first-spike pool's ``emitted`` mask keeps (as its ``_ttfs_pool`` tag): the
    pooled spike times, the input times they came from, the step, the mask's version."""

    source: Tensor
    times: Tensor
    k: int
    version: int | None


def _fast_fire(mem: Tensor, fired: Tensor, thresholds: Tensor, k: int
               ) -> tuple[Tensor, Tensor]:
    """The fire-window step from spike times (kept on the ``fired`` mask the previous step
    returned, with what they were computed from; anything else — another ``mem``, one written
    in place since, a written ``fired``, other thresholds — recomputes them)."""
    T = thresholds.shape[0]
    tag: _FireTag | None = getattr(fired, "_ttfs_fire", None)
    if (tag is not None and tag.mem is mem and tag.k == k - 1
            and _unwritten(mem, tag.mem_version) and _unwritten(fired, tag.fired_version)
            and (tag.thresholds is thresholds or torch.equal(tag.thresholds, thresholds))):
        times = tag.times
    else:
        times = fire_times(mem, fired, thresholds, k)
    spikes, fired = _emit(times, k, T, fired, mem.dtype)
    fired._ttfs_fire = _FireTag(mem, _version(mem), thresholds,  # type: ignore[attr-defined]
                                times, k, _version(fired))
    return spikes, fired


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
    """A zero tensor tagged as silent (reusing ``cache`` when it fits and is still silent).

    The tag holds the tensor's version counter: once anyone writes into it in place (a user's
    ``spk.mul_(mask)``, a hook), it is no longer silent (:func:`is_silent`) and no longer
    reused, so the write is neither skipped by the next module nor seen in later steps."""
    if (cache is None or not is_silent(cache) or cache.shape != torch.Size(shape)
            or cache.dtype != like.dtype or cache.device != like.device):
        with _countable():
            cache = like.new_zeros(shape)
        cache._ttfs_silent = _version(cache)  # type: ignore[attr-defined]  # a tag
    return cache


def is_silent(x: Tensor) -> bool:
    """True for an unmodified tensor made by :func:`silent_zeros` (all zeros, nothing to
    compute)."""
    tag = getattr(x, "_ttfs_silent", None)
    return tag is not None and _unwritten(x, tag)


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
    (``w == layer_index + 1``): spike where ``mem >= thr[k]`` and not fired before; the current
    is not read (the membrane stays as the window opened), so where no gradient is needed the
    spikes come from :func:`fire_times`, computed once per window (the same spikes).
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
        grad = torch.is_grad_enabled() and (mem.requires_grad or thresholds.requires_grad)
        if not grad and _FAST[0] and thresholds.dtype == mem.dtype and non_increasing(thresholds):
            spikes, fired = _fast_fire(mem, fired, thresholds, k)
        else:
            threshold = thresholds[k].to(mem.dtype)
            if grad:
                v = mem - threshold
                crossed = v.detach() >= 0
                spikes = spike_fn(v) * (~fired).to(mem.dtype)
            else:  # the reference rule: boolean ops only, one conversion
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
    ``op(spikes)`` runs event-driven where it can (:func:`ttfs_plugin.ops.event_synapse.weight_op`).
    """
    T = kernel.shape[0]
    window, k = windows(step, T)
    if window != source_index + 1 or (is_silent(spikes) and (k > 0 or bias is None)):
        return None
    current = weight_op(op, spikes) * kernel[k].to(spikes.dtype)
    return with_bias(current, bias) if k == 0 else current


def with_bias(current: Tensor, bias: Tensor | None) -> Tensor:
    """``current + bias`` over the channel dimension (dimension 1); ``bias=None``: unchanged."""
    if bias is None:
        return current
    return current + bias.to(current.dtype).view(1, -1, *([1] * (current.dim() - 2)))


def first_spike_pool_step(spikes: Tensor, emitted: Tensor | None, kernel_size: int
                          ) -> tuple[Tensor, Tensor]:
    """Max-pool spikes; a pooled unit passes only its first spike. Returns ``(out, emitted)``.

    Spikes that carry their times (:func:`spike_times_of`) are pooled as times, once per window
    (:func:`pooled_times`): the same output, without a max-pool per step.
    """
    tag = spike_times_of(spikes) if _FAST[0] and not spikes.requires_grad else None
    if tag is not None and emitted is not None:
        return _fast_pool(tag, spikes, emitted, kernel_size)
    pooled = F.max_pool2d(spikes, kernel_size)
    if emitted is None:
        emitted = torch.zeros_like(pooled, dtype=torch.bool)
    out = pooled * (~emitted).to(pooled.dtype)
    return out, emitted | (out.detach() > 0)


def pooled_times(times: Tensor, emitted: Tensor | None, k: int, T: int, kernel_size: int
                 ) -> Tensor:
    """Spike times of a first-spike max-pool from local time ``k`` on: the earliest input spike
    still to come (``times >= k``; a min over each pool, as a max-pool of ``-t``), ``T`` where
    the pooled unit has emitted already (``emitted=None``: none has). Exact: small integers are
    exact in float32."""
    coming = (torch.where(times >= k, times, T) if k > 0 else times).to(torch.float32)
    first = F.max_pool2d(coming.neg_(), kernel_size).neg_().to(times.dtype)
    return first if emitted is None else first.masked_fill_(emitted, T)


def _fast_pool(tag: SpikeTimes, spikes: Tensor, emitted: Tensor, kernel_size: int
               ) -> tuple[Tensor, Tensor]:
    """The pool's step from pooled spike times (kept on the ``emitted`` mask it returned, while
    that mask is not written in place)."""
    kept: _PoolTag | None = getattr(emitted, "_ttfs_pool", None)
    if (kept is not None and kept.source is tag.times and kept.k == tag.k - 1
            and _unwritten(emitted, kept.version)):
        times = kept.times
    else:
        times = pooled_times(tag.times, emitted, tag.k, tag.T, kernel_size)
    out, emitted = _emit(times, tag.k, tag.T, emitted, spikes.dtype)
    emitted._ttfs_pool = _PoolTag(tag.times, times, tag.k,  # type: ignore[attr-defined]
                                  _version(emitted))
    return out, emitted


def window_synapse_step(spikes: Tensor, state: SynapseState, source_index: int,
                        kernel: Tensor, op: nn.Module, bias: Tensor | None
                        ) -> tuple[Tensor | None, SynapseState]:
    """The window-batched synapse (opt-in): the current of a whole fire window at its last step.

    The synapse is linear, so ``sum_k op(s_k) * kappa(k) = op(sum_k kappa(k) * s_k)``: it
    collects the decoded input ``x = sum_k kappa(k) s_k`` (from the spikes' times,
    :func:`spike_times_of`, at the window's end; from the spikes themselves where they carry no
    times) and applies ``op`` once, ``op(x) + bias``, at local time ``T-1``; every other step
    gives no current (``None``). The target's spike times and the logits are the exact path's up
    to summation order (equal in float64 in the tests); its membrane trace is not (it moves
    only at the window's end).
    """
    T = kernel.shape[0]
    window, k = windows(state.step, T)
    step = next_step(state.step)
    if window != source_index + 1:
        return None, SynapseState(step)
    value, times, since = state.value, state.times, state.since
    tag = spike_times_of(spikes) if _FAST[0] else None
    if tag is not None and times is tag.times:
        pass  # the same window's times: nothing to do this step
    else:
        if times.numel():  # times seen so far cover steps since ... k-1 only
            value = _add(value, decode_between(times, int(since) % T, k, kernel))
            times = _NO_VALUE
        if tag is not None:
            times, since = tag.times, state.step
        elif not is_silent(spikes):
            value = _add(value, spikes * kernel[k].to(spikes.dtype))
    if k < T - 1:
        return None, SynapseState(step, value, times, since)
    if times.numel():
        value = _add(value, decode_between(times, int(since) % T, T, kernel))
    if not value.numel():
        if bias is None:
            return None, SynapseState(step)
        value = spikes  # silent all window: op(0) + bias
    return with_bias(op(value.to(spikes.dtype)), bias), SynapseState(step)


def decode_between(times: Tensor, start: int, stop: int, kernel: Tensor) -> Tensor:
    """``kappa(t)`` of the spikes at local times ``start <= t < stop``, ``0`` elsewhere."""
    T = kernel.shape[0]
    if start > 0 or stop < T:
        times = torch.where((times >= start) & (times < stop), times, T)
    return decode(times.long(), kernel)


def _add(total: Tensor, part: Tensor) -> Tensor:
    return part if not total.numel() else total + part


def readout_step(current: Tensor, mem: Tensor | None) -> Tensor:
    """The readout membrane after integrating ``current`` (silent current: unchanged)."""
    if mem is None or mem.shape != current.shape:
        mem = torch.zeros_like(current)
    return mem if is_silent(current) else mem + current


def total_steps(num_spiking_layers: int, T: int) -> int:
    """Latency ``(L+1)*T`` of a network with ``L`` spiking layers (input encoder included)."""
    return (num_spiking_layers + 1) * T
