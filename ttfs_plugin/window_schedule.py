"""A whole simulated run window by window: what ``simulate`` does where that gives the per-step
loop's results bit for bit.

The per-step loop (``out = net(x_t)`` in snnTorch, ``out, state = net(x_t, state)`` in Norse)
calls every module at each of the ``(L+1)*T`` steps, though during window ``w`` only layer
``w-1`` fires and layer ``w`` integrates; every other module returns silent zeros. Here each
module takes a whole window at once, through the same step functions and the same float
operations in the same order (:mod:`ttfs_plugin.timestep`):

* a firing layer's spike times, once (:func:`~ttfs_plugin.timestep.fire_times`);
* first-spike max-pooling of those times, once (:func:`~ttfs_plugin.timestep.pooled_times`);
* an exact synapse's ``T`` weight ops, each on ``times == k`` as the loop hands it over, the
  integrating layer adding the currents in step order (made one at a time, not held together);
  where the weight op is event-driven (:mod:`ttfs_plugin.ops.event_synapse`, as in the loop),
  one kernel call per window adds the same ``T`` currents, in the same order, into the
  target's membrane;
* a window-batched synapse's one weight op on the decoded times;
* nothing for an idle module, and no per-step spike tensor that no weight op reads.

The signal a module passes on for one window is ``None`` (silent throughout), :class:`Times`
(spikes ``times == k`` at local time ``k``), :class:`Currents` (an event-driven synapse's
window, added by its target) or an iterator of ``T`` per-step tensors (``None``: silent at that
step). :func:`run` applies only where each of these rules is provably the loop's:
no autograd, the fast paths on, the whole run (``num_steps``), a flat chain of the adapter's own
module classes with no hooks on them, analog input, no ``norm`` modules, one ``T`` and one dtype,
non-increasing threshold tables. Anything else returns ``None`` and ``simulate`` steps the loop.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Iterator, NamedTuple, Union

import torch
from torch import Tensor, nn

from .kernel import encode, encode_and_decode, silence_padded
from .layers import check_intensities
from .ops import spike_time_dtype
from .ops.event_synapse import (
    EventOp,
    add_window,
    event_op,
    global_forward_hooks,
    has_forward_hooks,
)
from .stepped import (
    MaxPoolBase,
    NeuronBase,
    ReadoutBase,
    Stepped,
    SynapseBase,
    pooled_shape,
    run_length,
)
from .timestep import (
    PoolState,
    SynapseState,
    as_current,
    decode_between,
    fast_paths_enabled,
    non_increasing,
    pooled_times,
    readout_step,
    silent_zeros,
    step_tensor,
    synapse_step,
    window_synapse_step,
    with_bias,
)


class Times(NamedTuple):
    """A window's spikes as their local times: the spike tensor of step ``k`` is
    ``(times == k)`` in the network's dtype; ``T``: no spike. ``values``: where the firing
    layer made them in the same pass, ``decode(times, kernel)`` for the kernel table whose
    silence-padded form is ``table``."""

    times: Tensor
    values: Tensor | None = None
    table: Tensor | None = None


class Currents(NamedTuple):
    """An exact synapse's window of currents, for its target to add into its membrane in one
    event-driven kernel call (:func:`~ttfs_plugin.ops.event_synapse.add_window`); where that
    declines, ``steps()`` gives the per-step currents."""

    event: EventOp
    times: Tensor
    kernel: Tensor
    bias: Tensor | None
    steps: Callable[[], Iterator[Union[Tensor, None]]]

    def add_into(self, mem: Tensor) -> Tensor:
        """``mem`` with the window's currents added in step order (in place where it can)."""
        if add_window(self.event, self.times, self.kernel, self.bias, mem):
            return mem
        for current in self.steps():
            if current is not None:
                mem = mem + current
        return mem


Signal = Union[None, Times, Currents, Iterator[Union[Tensor, None]]]


class WindowRun(NamedTuple):
    """What :func:`run` returns: the last module's membrane (the logits), every spiking
    layer's spike times (int64, ``T`` = none) and neurons per sample, keyed like the
    per-step recorder (``layer_name`` or the module's name)."""

    logits: Tensor
    times: dict[str, Tensor]
    neurons: dict[str, int]
    T: int


def chain_of(net: nn.Module, container: Callable[[nn.Module], bool],
             accepts: Callable[[nn.Module, bool], bool]) -> list[tuple[str, Stepped]] | None:
    """The modules of ``net`` in call order when the window schedule applies to it:
    ``container(net)`` (the adapter's own container, calling its children in order), its
    children are the plugin's time-stepped modules that ``accepts(module, is_last)`` (the
    adapter's own classes, set up as its conversion sets them up), nothing in it has a forward
    hook (a hook expects to see every step) and no global module hook is set. ``None``
    otherwise. (Hooks on a synapse's weight op are fine: it is called as often, on the same
    tensors, as in the loop.)"""
    if not container(net) or global_forward_hooks():
        return None
    children = list(net.named_children())
    if not children or has_forward_hooks(net):
        return None
    for i, (_, child) in enumerate(children):
        if not isinstance(child, Stepped) or not accepts(child, i == len(children) - 1):
            return None
        if any(has_forward_hooks(m) for m in child.modules()
               if m is child or isinstance(m, Stepped)):
            return None
    return [(name, child) for name, child in children]  # type: ignore[misc]


def run(chain: list[tuple[str, Stepped]], x: Tensor, steps: int) -> WindowRun | None:
    """The whole run of ``chain`` on the analog batch ``x`` (given at step 0), or ``None`` when
    the window schedule does not apply (decided before any work: then step the loop)."""
    modules = [m for _, m in chain]
    neurons = [m for m in modules if isinstance(m, NeuronBase)]
    if (torch.is_grad_enabled() or not fast_paths_enabled() or not neurons
            or steps != run_length(neurons)
            or not all(isinstance(m, _KINDS) for m in modules)):
        return None
    kernels = [m.kernel for m in modules if isinstance(m, (NeuronBase, SynapseBase))]
    T, dtype = kernels[0].T, kernels[0].tau.dtype
    if any(k.T != T or k.tau.dtype != dtype for k in kernels):
        return None
    if any(m.norm is not None or m.input_mode != "analog" for m in neurons):
        return None
    if not isinstance(modules[-1], (ReadoutBase, NeuronBase)) or any(
            isinstance(m, ReadoutBase) for m in modules[:-1]):
        return None
    for neuron in neurons:  # where the loop would fire by the reference rule, not fire_times
        thresholds = neuron._thresholds()
        if not neuron.relay and (thresholds.dtype != dtype or not non_increasing(thresholds)):
            return None
    return _Schedule(chain, T, dtype).run(x, steps // T)


_KINDS = (NeuronBase, SynapseBase, MaxPoolBase, ReadoutBase)


class _Schedule:
    """One run: per-module state (membranes, pooled units emitted) and the recorded times."""

    def __init__(self, chain: list[tuple[str, Stepped]], T: int, dtype: torch.dtype) -> None:
        self.chain = chain
        self.T = T
        self.dtype = dtype
        self.mem: dict[int, Tensor] = {}
        self.emitted: dict[int, Tensor] = {}
        self.shapes: list[tuple[int, ...]] = []  # each module's input shape
        self.times: dict[str, Tensor] = {}
        self.neurons: dict[str, int] = {}
        self.like: Tensor = torch.zeros(0)

    def run(self, x: Tensor, windows: int) -> WindowRun:
        x = as_current(x, self.dtype)
        first = self.chain[0][1]
        if isinstance(first, NeuronBase) and first.layer_index == 0:
            check_intensities(x, first.check_range)  # what layer 0 checks at step 0
        self.like = x
        self._check_shapes(tuple(x.shape))
        for w in range(windows):
            signal: Signal = iter([x] + [None] * (self.T - 1)) if w == 0 else None
            for i, (name, module) in enumerate(self.chain):
                signal = self._advance(i, name, module, w, signal)
            _drain(signal)
        last = len(self.chain) - 1
        logits = self.mem.get(last)
        if logits is None:
            logits = torch.zeros(self.shapes[last], dtype=self.dtype, device=x.device)
        return WindowRun(logits, self.times, self.neurons, self.T)

    def _check_shapes(self, shape: tuple[int, ...]) -> None:
        """Each module's input shape, as the loop's step 0 finds them (a synapse probes its
        op once: a shape that does not fit is the loop's ``InputShapeError``)."""
        for _, module in self.chain:
            self.shapes.append(shape)
            if isinstance(module, MaxPoolBase):
                shape = pooled_shape(shape, module.kernel_size)
            elif isinstance(module, SynapseBase):
                shape = tuple(module._output_shape(self._zeros(shape)))

    def _decodes(self, i: int) -> bool:
        """Whether module ``i`` decodes a Times signal (a window-batched synapse)."""
        module = self.chain[i][1] if i < len(self.chain) else None
        return isinstance(module, SynapseBase) and module.window_batched

    def _per_step(self, signal: Signal) -> Iterator[Tensor | None]:
        """The per-step tensors of a window's signal (``None``: silent): spike times become
        the loop's spike tensors ``(times == k)`` in the network's dtype."""
        if signal is None:
            return iter([None] * self.T)
        if isinstance(signal, Times):
            times = signal.times
            return ((times == k).to(self.dtype) for k in range(self.T))
        if isinstance(signal, Currents):
            return signal.steps()
        return signal

    def _zeros(self, shape) -> Tensor:
        return silent_zeros(shape, self.like)

    def _advance(self, i: int, name: str, module: Stepped, w: int, signal: Signal) -> Signal:
        if isinstance(module, NeuronBase):
            return self._neuron(i, name, module, w, signal)
        if isinstance(module, SynapseBase):
            return self._synapse(i, module, w, signal)
        if isinstance(module, MaxPoolBase):
            return self._pool(i, module, signal)
        if isinstance(signal, Currents):  # the readout (run() admits nothing else)
            self.mem[i] = signal.add_into(self._mem(i))
            return None
        for current in self._per_step(signal):
            if current is not None:
                self.mem[i] = readout_step(current, self._mem(i))
        return None

    def _mem(self, i: int) -> Tensor:
        """Module ``i`` 's membrane so far: zeros of its input shape in the network's dtype at
        first, as the loop makes it from step 0's silent input (so a current of another dtype,
        e.g. bf16 under autocast, is added into that dtype as there)."""
        mem = self.mem.get(i)
        if mem is None:
            mem = self.mem[i] = torch.zeros(self.shapes[i], dtype=self.dtype,
                                            device=self.like.device)
        return mem

    def _neuron(self, i: int, name: str, neuron: NeuronBase, w: int, signal: Signal) -> Signal:
        """Integrate in window ``layer_index`` (``mem + current``, step by step), fire in the
        next: the relay passes its membrane on at ``k = 0``; any other layer its spike times."""
        index = neuron.layer_index
        if w == index and isinstance(signal, Currents):
            self.mem[i] = signal.add_into(self._mem(i))
            return None
        if w != index + 1:
            for current in self._per_step(signal):
                if w == index and current is not None:
                    # the loop's mem + as_current(current), into a tensor of our own
                    self._mem(i).add_(current.to(self.dtype))
            return None
        _drain(signal)  # the fire window does not read its input
        mem = self._mem(i)
        if neuron.relay:
            return iter([mem] + [None] * (self.T - 1))
        thresholds = neuron._thresholds()  # non-increasing, of this dtype: checked by run()
        # fire_times at k = 0 with nobody fired yet: encode (a window-batched synapse next
        # also gets kappa(t), from the same pass)
        dtype = spike_time_dtype(self.T)
        values = table = None
        if self._decodes(i + 1):
            kernel = neuron._table("kernel")
            table = silence_padded(kernel)
            times, values = encode_and_decode(mem, thresholds, kernel, dtype)
        else:
            times = encode(mem, thresholds, dtype)
        label = neuron.layer_name or name
        self.times[label] = times.long()
        self.neurons[label] = math.prod(mem.shape[1:])
        return Times(times, values, table)

    def _pool(self, i: int, pool: MaxPoolBase, signal: Signal) -> Signal:
        if signal is None:
            return None
        emitted = self.emitted.get(i)
        if emitted is None:
            emitted = torch.zeros(pooled_shape(self.shapes[i], pool.kernel_size),
                                  dtype=torch.bool, device=self.like.device)
        if isinstance(signal, Times):
            before = emitted if i in self.emitted else None  # None: none emitted yet
            pooled = pooled_times(signal.times, before, 0, self.T, pool.kernel_size)
            self.emitted[i] = emitted | (pooled < self.T)
            return Times(pooled)
        return self._pool_steps(i, pool, signal, emitted)

    def _pool_steps(self, i: int, pool: MaxPoolBase, signal: Iterable, emitted: Tensor
                    ) -> Iterator[Tensor | None]:
        state = PoolState(emitted)
        for spikes in signal:
            if spikes is None:
                yield None
                continue
            out, state = pool.advance(spikes, state)
            self.emitted[i] = state.emitted
            yield out

    def _synapse(self, i: int, synapse: SynapseBase, w: int, signal: Signal) -> Signal:
        if w != synapse.source_index + 1:
            _drain(signal)
            return None
        kernel = synapse._table("kernel")
        if isinstance(signal, Times) and synapse.window_batched:
            if (signal.values is not None and signal.table is not None
                    and torch.equal(signal.table, silence_padded(kernel))):
                value = signal.values  # the same gather from an equal table
            else:
                value = decode_between(signal.times, 0, self.T, kernel)
            current = with_bias(synapse.op(value.to(self.dtype)), synapse.bias)
            return iter([None] * (self.T - 1) + [current])
        if isinstance(signal, Times) and not synapse.window_batched:
            event = event_op(synapse.op, self._zeros((0,)))
            if event is not None:
                return Currents(event, signal.times, kernel, synapse.bias,
                                lambda: self._synapse_steps(i, synapse, w, signal, kernel))
        return self._synapse_steps(i, synapse, w, signal, kernel)

    def _synapse_steps(self, i: int, synapse: SynapseBase, w: int, signal: Signal,
                       kernel: Tensor) -> Iterator[Tensor | None]:
        """The loop's own synapse step functions, one step at a time (an exact synapse runs its
        weight op on every step's spikes; made as the consumer asks, never held together)."""
        zeros = self._zeros(self.shapes[i])
        state = SynapseState(step_tensor(w * self.T))
        for k, spikes in enumerate(self._per_step(signal)):
            spikes = zeros if spikes is None else spikes
            if synapse.window_batched:
                current, state = window_synapse_step(spikes, state, synapse.source_index,
                                                     kernel, synapse.op, synapse.bias)
            else:
                current = synapse_step(spikes, w * self.T + k, synapse.source_index, kernel,
                                       synapse.op, synapse.bias)
            yield current


def _drain(signal: Signal) -> None:
    """Run what an ignored signal would have computed in the loop (its weight ops; an
    event-driven one has no hooks to see them)."""
    if signal is not None and not isinstance(signal, (Times, Currents)):
        for _ in signal:
            pass
