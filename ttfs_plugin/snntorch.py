"""snnTorch adapter: a native TTFS neuron, temporal-kernel synapse and first-spike pooling.

Needs only the ``snntorch`` extra. The modules behave like ``snn.Leaky``: they drop into
``nn.Sequential`` with ``init_hidden=True`` (``spk = net(x_t)`` per step) or take explicit state
(``spk, mem = neuron(x, mem)`` from ``mem = neuron.init_leaky()``).

>>> from ttfs_plugin.checkpoint import load_checkpoint
>>> from ttfs_plugin import snntorch as tsnn
>>> model, _ = load_checkpoint("runs/demo/checkpoint.pt")
>>> net = tsnn.to_snntorch(model)             # an nn.Sequential of snnTorch modules
>>> result = tsnn.simulate(net, images)       # (L+1)*T steps of spk = net(x_t)
>>> result.logits.argmax(1), result.spike_counts

Every module of a network shares one run clock (:mod:`ttfs_plugin.stepped`): a new batch — after
:func:`reset`, after ``snntorch.utils.reset`` (which does not reach these modules), or with no
reset at all — starts a new run by itself once the previous one has run its ``num_steps(net)``
steps; a new batch size starts one at once. Time-stepped semantics: :mod:`ttfs_plugin.timestep`
(SPEC §8).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Callable, Protocol, cast

import torch
from torch import Tensor, nn

try:
    import snntorch as snn
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("ttfs_plugin.snntorch needs snnTorch: pip install 'ttfs-plugin[snntorch]'"
                      ) from exc

from . import export, window_schedule
from .errors import ConfigError
from .kernel import DEFAULT_KERNEL, DEFAULT_QUANTIZER
from .layers import TemporalKernel
from .simulation import SimulationResult, run_simulation
from .stepped import (
    MaxPoolBase,
    NeuronBase,
    ReadoutBase,
    Stepped,
    SynapseBase,
    bind_clock,
    impulse_train,
    input_spike_train,
    num_steps,
)
from .timestep import NeuronState, SpikeFn, initial_neuron_state, straight_through

__all__ = ["TTFSNeuron", "TemporalKernelSynapse", "FirstSpikeMaxPool2d", "ReadoutIntegrator",
           "NeuronState", "reset", "to_snntorch", "simulate", "num_steps", "impulse_train",
           "input_spike_train", "save", "load", "BACKEND"]


def _refuse(name: str, value, allowed, why: str) -> None:
    if value != allowed:
        raise ConfigError(f"TTFSNeuron: {name}={value!r} is not supported ({why}); leave it at "
                          f"{allowed!r}")


SurrogateFn = Callable[[Tensor], Tensor]


class _HiddenState(Protocol):
    """The plugin's snnTorch-style modules: each resets its own hidden state."""

    def reset_hidden(self) -> None: ...


class _Theta0(float):
    """``theta0`` as snnTorch's ``threshold``: a plain float. Reading it as a tensor
    (``.detach()``) is what ``snntorch.export_to_nir`` does to write a neuron as a LIF node, which
    would describe a TTFS layer wrongly (constant threshold, no windows): refused, with the way
    that works."""

    def detach(self):
        raise export.ExportError(
            "snntorch.export_to_nir cannot describe a TTFS neuron (it would write a LIF node: "
            "constant threshold, no time windows); write the network with "
            "ttfs_plugin.nir.write(net, 'net.nir', input_shape=...) (docs/nir.md)")


class TTFSNeuron(snn.Leaky, NeuronBase):
    """TTFS neuron of spiking layer ``layer_index``: IF membrane without leak, decaying threshold
    ``thr[k] = theta0 * kappa(k)`` (``quantizer="round"``: ``kappa(k + 1/2)``), fires once, then
    refractory.

    An ``snn.Leaky`` with ``beta = 1`` (no leak), so snnTorch's own tools that recognise neurons
    by class (``snntorch.backprop.BPTT``, which needs a neuron as the last layer) accept it.

    Integrates during window ``layer_index`` and fires during window ``layer_index + 1``.
    ``spike_grad`` is snnTorch's surrogate-gradient hook (default ``atan``), used backward only:
    forward, a spike is exactly ``mem >= thr[k]``; ``surrogate_disable=True`` passes no gradient
    through the spike.

    * ``init_hidden=True``: ``spk = neuron(x)`` (``spk, mem`` with ``output=True``);
    * explicit state: ``spk, mem = neuron(x, mem)`` where ``mem`` is the
      :class:`~ttfs_plugin.timestep.NeuronState` the last call returned, or
      ``neuron.init_leaky()`` / ``None`` / a zero tensor to start.

    ``threshold`` is snnTorch's name for ``theta0`` (reading or setting it changes the kernel's
    ``theta0``). Keywords of ``snn.SpikingNeuron`` that have no TTFS meaning (``inhibition``,
    ``learn_threshold``, ``reset_mechanism`` other than ``"none"``, ``state_quant``,
    ``graded_spikes_factor`` other than 1, ``learn_graded_spikes_factor``) are refused.

    ``norm`` (optional, e.g. :class:`~ttfs_plugin.layers.TBBatchNorm2d`) normalises the
    integrated membrane once, when firing starts: the TB batch norm of a natively built network,
    which :func:`ttfs_plugin.training.spike_proxy_loss` pairs with this neuron. ``input_mode``
    (layer 0): ``"analog"`` impulse at step 0 or ``"spikes"`` (a first-spike train in window 0).
    Layer 0 refuses NaN or inf at step 0; ``check_range=True`` (set on the input layer of
    :func:`to_snntorch` and :func:`load`) also refuses values outside ``[0, 1]``.
    ``tau`` and ``td`` are ``nn.Parameter`` s of ``neuron.kernel``. Unlike other snnTorch neurons
    it is not added to snnTorch's global instance list.
    """

    spike_grad: SurrogateFn | None  # set by snn.Leaky.__init__
    surrogate_disable: bool

    def __init__(self, layer_index: int, T: int = DEFAULT_KERNEL.T,
                 tau: float = DEFAULT_KERNEL.tau0, td: float = DEFAULT_KERNEL.td0,
                 theta0: float = DEFAULT_KERNEL.theta0, spike_grad=None,
                 surrogate_disable: bool = False,
                 init_hidden: bool = False, inhibition: bool = False,
                 learn_threshold: bool = False, reset_mechanism: str = "none",
                 state_quant=False, output: bool = False, graded_spikes_factor: float = 1.0,
                 learn_graded_spikes_factor: bool = False, threshold: float | None = None,
                 kernel: TemporalKernel | None = None, norm: nn.Module | None = None,
                 layer_name: str | None = None, input_mode: str = "analog",
                 is_output: bool = False, check_range: bool = False,
                 quantizer: str = DEFAULT_QUANTIZER, relay: bool = False) -> None:
        _refuse("inhibition", inhibition, False, "a TTFS layer has no winner-take-all")
        _refuse("learn_threshold", learn_threshold, False,
                "theta0 is fixed; tau and td are the trainable kernel parameters")
        _refuse("reset_mechanism", reset_mechanism, "none",
                "a TTFS neuron fires at most once and is refractory afterwards")
        _refuse("state_quant", state_quant, False, "the membrane is not quantised")
        _refuse("graded_spikes_factor", float(graded_spikes_factor), 1.0,
                "a spike's value is kappa(k), applied by the synapse")
        _refuse("learn_graded_spikes_factor", learn_graded_spikes_factor, False,
                "a spike's value is kappa(k), applied by the synapse")
        if threshold is not None:
            if theta0 != 1.0 and float(threshold) != float(theta0):
                raise ConfigError(f"threshold={threshold} and theta0={theta0} disagree; they "
                                  "are the same value, give one")
            theta0 = float(threshold)
        super().__init__(  # type: ignore[call-arg]  # snn.Leaky.__init__ (untyped)
            beta=1.0, threshold=theta0, spike_grad=spike_grad,
            surrogate_disable=surrogate_disable, init_hidden=init_hidden,
            output=output, reset_mechanism="none")
        snn.SpikingNeuron.instances.remove(self)  # no global registry: see reset()
        if kernel is None:
            kernel = TemporalKernel(T, tau, td, theta0, quantizer=quantizer)
        self._init_neuron(layer_index, kernel, norm, layer_name, input_mode, is_output,
                          check_range, relay)
        self.state: NeuronState | None = None

    # snnTorch keeps ``threshold`` and ``mem`` as buffers; here they are the kernel's theta0 and
    # the membrane of the run's state.
    def _threshold_buffer(self, threshold, learn_threshold) -> None:
        pass

    def _init_mem(self) -> None:
        pass

    @property
    def threshold(self) -> float:
        return _Theta0(self.kernel.theta0)

    @threshold.setter
    def threshold(self, value) -> None:
        self.kernel.theta0 = float(value)

    @property
    def mem(self) -> Tensor | None:
        return None if self.state is None else self.state.mem

    def spike_function(self) -> SpikeFn:
        return straight_through(None if self.surrogate_disable else self.spike_grad)

    def init_leaky(self) -> NeuronState:
        """A fresh state (what ``snn.Leaky.init_leaky`` is to ``Leaky``); resets hidden state."""
        self.reset_hidden()
        empty = torch.zeros(0)
        return NeuronState(empty, empty.bool(), initial_neuron_state(empty).step)

    reset_mem = init_leaky

    def reset_hidden(self) -> None:
        self.state = None

    def detach_hidden(self) -> None:
        if self.state is not None:
            self.state = self.state._replace(mem=self.state.mem.detach())

    def forward(self, input_: Tensor, mem: NeuronState | Tensor | None = None):
        if self.init_hidden:
            if mem is not None:
                raise TypeError("`mem` should not be passed as an argument while "
                                "`init_hidden=True`")
            state = None if self._run_changed() else self.state
            if self.layer_index == 0:
                if self.starts_new_run(input_, state):
                    self.clock.run += 1
                    self._keep("_seen_run", self.clock.run)
                    state = None
            elif state is not None and state.mem.shape != input_.shape:
                state = None  # a new batch size (auto-reset, as snn.Leaky)
            spikes, state = self.advance(input_, state)
            self._keep("state", state)
            return (spikes, state.mem) if self.output else spikes
        return self.advance(input_, self._as_state(mem))

    @staticmethod
    def _as_state(mem) -> NeuronState | None:
        if mem is None or isinstance(mem, NeuronState):
            return mem
        if isinstance(mem, Tensor):
            if mem.numel() == 0 or not bool(mem.any()):
                return None  # a zero membrane: the start of a run
            raise TypeError("a TTFS neuron's state is the NeuronState it returned (membrane, "
                            "fired mask and step); pass that back: spk, mem = neuron(x, mem)")
        raise TypeError(f"mem must be a NeuronState, a zero tensor or None, got "
                        f"{type(mem).__name__}")

    def extra_repr(self) -> str:
        return NeuronBase.extra_repr(self) + f", init_hidden={self.init_hidden}"


class TemporalKernelSynapse(SynapseBase):
    __doc__ = (SynapseBase.__doc__ or "") + """
    snnTorch style: ``current = synapse(spikes)``, the step counter kept inside.
    """

    def __init__(self, kernel: TemporalKernel, source_index: int, op: nn.Module | None = None,
                 bias: Tensor | None = None, layer_name: str | None = None,
                 window_batched: bool = False) -> None:
        super().__init__(kernel, source_index, op, bias, layer_name, window_batched)
        self.state = None
        self._batch: int | None = None

    @property
    def step(self) -> int:
        return 0 if self.state is None else int(self.state.step)

    def reset_hidden(self) -> None:
        self.state = None

    def forward(self, spikes: Tensor) -> Tensor:
        state = self.state
        if self._run_changed() or spikes.shape[0] != self._batch:
            state = None
        self._keep("_batch", spikes.shape[0])
        current, state = self.advance(spikes, state)
        self._keep("state", state)
        return current


class FirstSpikeMaxPool2d(MaxPoolBase):
    __doc__ = (MaxPoolBase.__doc__ or "") + "\n    snnTorch style: ``out = pool(spikes)``.\n"

    def __init__(self, kernel_size: int, layer_name: str | None = None) -> None:
        super().__init__(kernel_size, layer_name)
        self.state = None

    def reset_hidden(self) -> None:
        self.state = None

    def forward(self, spikes: Tensor) -> Tensor:
        out, state = self.advance(spikes, None if self._run_changed() else self.state)
        self._keep("state", state)
        return out


class ReadoutIntegrator(ReadoutBase):
    __doc__ = (ReadoutBase.__doc__ or "") + "\n    snnTorch style: ``mem = readout(current)``.\n"

    def __init__(self, layer_index: int = 0, layer_name: str | None = None) -> None:
        super().__init__(layer_index, layer_name)
        self.state = None

    @property
    def mem(self) -> Tensor | None:
        return None if self.state is None else self.state.mem

    def reset_hidden(self) -> None:
        self.state = None

    def forward(self, current: Tensor) -> Tensor:
        mem, state = self.advance(current, None if self._run_changed() else self.state)
        self._keep("state", state)
        return mem


def reset(net: nn.Module) -> nn.Module:
    """Start a new run: reset the hidden state of every stateful module inside ``net`` (nested
    ones too, snnTorch's own neurons included) and of nothing outside it, and bind the plugin's
    modules to one run clock.

    snnTorch's ``utils.reset`` sees only top-level modules and resets every instance of a class
    globally; this walks ``net.modules()`` and calls each module's own instance reset.
    """
    stepped = False
    for module in net.modules():
        if isinstance(module, Stepped):
            cast(_HiddenState, module).reset_hidden()
            stepped = True
        # snnTorch's own neurons (Leaky, Synaptic…)
        elif callable(reset_mem := getattr(module, "reset_mem", None)):
            reset_mem()
    if stepped:
        bind_clock(net)
    return net


def _neuron(stage: export.NeuronStage, spike_grad=None, **_) -> TTFSNeuron:
    return TTFSNeuron(stage.index, kernel=stage.kernel, spike_grad=spike_grad, init_hidden=True,
                      output=stage.output, layer_name=stage.name, input_mode=stage.input_mode,
                      is_output=stage.output, check_range=stage.index == 0, relay=stage.relay)


def _sequential(modules: list[tuple[str, nn.Module]]) -> nn.Sequential:
    return nn.Sequential(OrderedDict(modules))


#: How the shared export builds snnTorch modules (one factory per stage kind).
BACKEND = export.Backend(
    name="snntorch",
    factories={
        "neuron": _neuron,
        "synapse": TemporalKernelSynapse.from_stage,
        "maxpool": FirstSpikeMaxPool2d.from_stage,
        "readout": ReadoutIntegrator.from_stage,
    },
    container=_sequential,
    finish=reset,
)


def to_snntorch(model: nn.Module, spike_grad=None, output: str = "membrane",
                input_mode: str = "analog", window_batched: bool = False) -> nn.Sequential:
    """Convert a trained surrogate ``model`` into an snnTorch network (batch norm folded).

    The result steps with ``out = net(x_t)``. ``output="membrane"``: the last module returns the
    readout membrane (the logits after ``(L+1)*T`` steps). ``output="spikes"``: the last module is
    a TTFS output layer returning ``(spk, mem)`` like ``snn.Leaky(output=True)``; the first
    output spike is the class (``(L+2)*T`` steps), for ``snntorch.functional``'s temporal losses
    and ``snntorch.backprop``. ``input_mode="analog"``: feed the image at step 0 and zeros after;
    ``"spikes"``: feed a first-spike train during the first ``T`` steps
    (:func:`input_spike_train`). Like the surrogate, the converted network refuses an analog
    input that is not finite or not within ``[0, 1]``, and one whose shape does not fit its first
    layer (an ``InputShapeError`` at step 0).

    ``window_batched=True`` (opt-in; off by default) makes every synapse apply its weight op
    once per window on the decoded spike values instead of once per step: the same spike times
    and predictions (exactly in float64; float32 up to summation order), several times faster,
    but a layer's membrane then moves only at the last step of its integration window
    (:class:`~ttfs_plugin.stepped.SynapseBase`).
    """
    return cast(nn.Sequential,
                export.convert(model, BACKEND, output, input_mode, spike_grad=spike_grad,
                               window_batched=window_batched))


def simulate(net: nn.Module, x: Tensor, steps: int | None = None, native_loop: bool = False
             ) -> SimulationResult:
    """Step ``net`` ``num_steps(net)`` times the snnTorch way (``out = net(x_t)``); return the
    logits (the readout or output membrane at the end) and every neuron's spike time.

    ``x``: the input batch (analog input: one current impulse at step 0, zeros afterwards), or
    for a network with ``input_mode="spikes"`` its spike train ``(T, B, ...)``. Runs with
    autograd as the caller has it: under ``torch.no_grad()`` for evaluation (spike times once
    per fire window, cached tables: several times faster), without it to train through time on
    ``result.logits`` (every step's surrogate spike, and the graph kept).

    Under ``no_grad``, a network as :func:`to_snntorch` or :func:`load` makes it (no hooks on
    its modules, analog input) runs window by window instead (:mod:`ttfs_plugin.window_schedule`):
    the loop's logits and spike times bit for bit, idle modules not called; its modules are left
    reset. ``native_loop=True`` always steps ``net(x_t)``.
    """
    reset(net)
    chain = None if native_loop else window_schedule.chain_of(net, _plain_sequential,
                                                              _as_converted)
    return run_simulation(net, x, lambda x_t, state: (net(x_t), None), steps, chain=chain)


def _plain_sequential(net: nn.Module) -> bool:
    return type(net) is nn.Sequential


def _as_converted(module: nn.Module, last: bool) -> bool:
    """One of this adapter's modules as :func:`to_snntorch` sets it up (a neuron with hidden
    state, returning ``(spk, mem)`` only as the network's last module)."""
    if type(module) is TTFSNeuron:
        return bool(module.init_hidden) and bool(module.output) == last
    return type(module) in (TemporalKernelSynapse, FirstSpikeMaxPool2d, ReadoutIntegrator)


def save(net: nn.Module, path: str | Path) -> None:
    """Save a network of the plugin's snnTorch modules; :func:`load` rebuilds it."""
    export.save(net, path, BACKEND)


def load(path: str | Path, spike_grad=None, window_batched: bool = False) -> nn.Sequential:
    """Rebuild an exported snnTorch network from ``path`` (no surrogate or training code);
    ``window_batched`` as in :func:`to_snntorch`."""
    return cast(nn.Sequential, export.load(path, BACKEND, spike_grad=spike_grad,
                                           window_batched=window_batched))
