"""snnTorch adapter: a native TTFS neuron, temporal-kernel synapse and first-spike pooling.

Needs only the ``snntorch`` extra. The modules behave like ``snn.Leaky``: they drop into
``nn.Sequential`` with ``init_hidden=True`` (``spk = net(x_t)`` per step) or take explicit state.

>>> from ttfs_plugin.checkpoint import load_checkpoint
>>> from ttfs_plugin import snntorch as tsnn
>>> model, _ = load_checkpoint("runs/demo/checkpoint.pt")
>>> net = tsnn.to_snntorch(model)             # an nn.Sequential of snnTorch modules
>>> result = tsnn.simulate(net, images)       # (L+1)*T steps of spk = net(x_t)
>>> result.logits.argmax(1), result.spike_counts

Time-stepped semantics: :mod:`ttfs_plugin.timestep` (SPEC §8).
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from pathlib import Path

import torch
from torch import Tensor, nn

try:
    import snntorch as snn
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("ttfs_plugin.snntorch needs snnTorch: pip install 'ttfs-plugin[snntorch]'"
                      ) from exc

from .export import (
    MaxPoolStage,
    NeuronStage,
    ReadoutStage,
    SynapseStage,
    plan_network,
    read_exported,
    save_exported,
    spec_to_stages,
    stages_to_spec,
)
from .layers import TemporalKernel
from .simulation import SimulationResult, SpikeTimeRecorder
from .stepped import SilentOutput, SynapseBase, num_steps, pooled_shape
from .timestep import (
    NeuronState,
    first_spike_pool_step,
    initial_neuron_state,
    is_silent,
    neuron_step,
    straight_through,
    windows,
)

__all__ = ["TTFSNeuron", "TemporalKernelSynapse", "FirstSpikeMaxPool2d", "ReadoutIntegrator",
           "reset", "to_snntorch", "simulate", "num_steps", "save", "load"]


class TTFSNeuron(snn.SpikingNeuron, SilentOutput):
    """TTFS neuron of spiking layer ``layer_index``: IF membrane without leak, decaying threshold
    ``thr[k] = theta0 * kappa(k)``, fires once, then refractory.

    Integrates during window ``layer_index`` and fires during window ``layer_index + 1`` of its
    own step counter. ``spike_grad`` is snnTorch's surrogate-gradient hook (default ``atan``),
    used backward only: forward, a spike is exactly ``mem >= thr[k]``.

    * ``init_hidden=True``: ``spk = neuron(x)`` (``spk, mem`` with ``output=True``);
    * explicit state: ``spk, state = neuron(x, state)`` with a
      :class:`~ttfs_plugin.timestep.NeuronState` (``None`` to start).

    ``norm`` (optional, e.g. :class:`~ttfs_plugin.layers.TBBatchNorm2d`) normalises the
    integrated membrane once, when firing starts: the TB batch norm of a natively built network,
    which :func:`ttfs_plugin.training.spike_proxy_loss` pairs with this neuron.

    ``tau`` and ``td`` are ``nn.Parameter`` s of ``neuron.kernel`` (shared with the outgoing
    :class:`TemporalKernelSynapse` after export). Unlike other snnTorch neurons it is not added
    to snnTorch's global instance list; reset it with :func:`reset`.
    """

    def __init__(self, layer_index: int, T: int = 32, tau: float = 10.0, td: float = 0.0,
                 theta0: float = 1.0, spike_grad=None, init_hidden: bool = False,
                 output: bool = False, kernel: TemporalKernel | None = None,
                 norm: nn.Module | None = None, layer_name: str | None = None) -> None:
        super().__init__(threshold=theta0, spike_grad=spike_grad, init_hidden=init_hidden,
                         output=output, reset_mechanism="none")
        snn.SpikingNeuron.instances.remove(self)  # no global registry: see reset()
        self.layer_index = int(layer_index)
        self.kernel = kernel if kernel is not None else TemporalKernel(T, tau, td, theta0)
        self.norm = norm
        self.layer_name = layer_name
        self.state: NeuronState | None = None

    @property
    def mem(self) -> Tensor | None:
        return None if self.state is None else self.state.mem

    def firing_floor(self) -> Tensor:
        return self.kernel.firing_floor()

    def reset_hidden(self) -> None:
        self.state = None

    def forward(self, input_: Tensor, state: NeuronState | None = None):
        if self.init_hidden and state is not None:
            raise TypeError("`state` should not be passed while `init_hidden=True`")
        if self.init_hidden:
            state = self.state
        if state is None or state.mem.shape != input_.shape:
            state = initial_neuron_state(input_)
        spikes, state = self._step(input_, state)
        if not self.init_hidden:
            return spikes, state
        self.state = state
        return (spikes, state.mem) if self.output else spikes

    def _step(self, input_: Tensor, state: NeuronState) -> tuple[Tensor, NeuronState]:
        window, _ = windows(state.step, self.kernel.T)
        if window not in (self.layer_index, self.layer_index + 1):  # idle: no work
            return self._zeros_like(input_.shape, input_), state._replace(step=state.step + 1)
        spike_fn = straight_through(self.spike_grad)
        return neuron_step(input_, state, self.layer_index, self.kernel.thresholds(), spike_fn,
                           zeros=self._zeros_like(input_.shape, input_), norm=self.norm)

    def extra_repr(self) -> str:
        return f"layer_index={self.layer_index}, init_hidden={self.init_hidden}"


class TemporalKernelSynapse(SynapseBase):
    __doc__ = SynapseBase.__doc__ + """
    snnTorch style: ``current = synapse(spikes)``, the step counter kept inside (reset with
    :func:`reset`).
    """

    def __init__(self, kernel: TemporalKernel, source_index: int, op: nn.Module | None = None,
                 bias: Tensor | None = None) -> None:
        super().__init__(kernel, source_index, op, bias)
        self.step = 0

    def reset_hidden(self) -> None:
        self.step = 0

    def forward(self, spikes: Tensor) -> Tensor:
        current = self.current(spikes, self.step)
        self.step += 1
        return current


class FirstSpikeMaxPool2d(SilentOutput):
    """Max-pooling of spikes in which a pooled unit emits only at its first input spike."""

    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        self.kernel_size = int(kernel_size)
        self.emitted: Tensor | None = None

    def reset_hidden(self) -> None:
        self.emitted = None

    def forward(self, spikes: Tensor) -> Tensor:
        shape = pooled_shape(spikes, self.kernel_size)
        if self.emitted is not None and self.emitted.shape != shape:
            self.emitted = None
        if is_silent(spikes):
            return self._zeros_like(shape, spikes)
        out, self.emitted = first_spike_pool_step(spikes, self.emitted, self.kernel_size)
        return out

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}"


class ReadoutIntegrator(nn.Module):
    """Non-spiking output layer: integrates its input current; its membrane is the logits."""

    def __init__(self) -> None:
        super().__init__()
        self.mem: Tensor | None = None

    def reset_hidden(self) -> None:
        self.mem = None

    def forward(self, current: Tensor) -> Tensor:
        if self.mem is None or self.mem.shape != current.shape:
            self.mem = torch.zeros_like(current)
        if not is_silent(current):
            self.mem = self.mem + current
        return self.mem


def reset(net: nn.Module) -> nn.Module:
    """Reset the hidden state of every stateful module inside ``net`` (nested ones too), and of
    nothing outside it. Call between batches.

    snnTorch's ``utils.reset`` sees only top-level modules and resets every instance of a class
    globally; this walks ``net.modules()`` and calls each module's own instance reset.
    """
    for module in net.modules():
        if callable(getattr(module, "reset_mem", None)):  # snnTorch neurons (Leaky, Synaptic…)
            module.reset_mem()
        else:
            fn = getattr(module, "reset_hidden", None)
            if inspect.ismethod(fn) and fn.__self__ is module:  # not snnTorch's classmethods
                fn()
    return net


def modules_from_stages(stages, spike_grad=None) -> nn.Sequential:
    """An ``nn.Sequential`` (``init_hidden=True``) of snnTorch modules for export stages."""
    layers: list[tuple[str, nn.Module]] = []
    for st in stages:
        if isinstance(st, NeuronStage):
            layers.append((st.name, TTFSNeuron(st.index, kernel=st.kernel, spike_grad=spike_grad,
                                               init_hidden=True, layer_name=st.name)))
        elif isinstance(st, SynapseStage):
            layers.append((st.name, TemporalKernelSynapse(st.kernel, st.source, st.op, st.bias)))
        elif isinstance(st, MaxPoolStage):
            layers.append((st.name, FirstSpikeMaxPool2d(st.kernel_size)))
        elif isinstance(st, ReadoutStage):
            layers.append(("readout", ReadoutIntegrator()))
    return nn.Sequential(OrderedDict(layers))


def to_snntorch(model: nn.Module, spike_grad=None) -> nn.Sequential:
    """Convert a trained surrogate ``model`` into an snnTorch network (batch norm folded).

    The result steps with ``spk = net(x_t)``; feed the image at step 0 and zeros after
    (see :func:`simulate`). Its last module returns the readout membrane (the logits).
    """
    stages = plan_network(model)
    net = modules_from_stages(stages, spike_grad)
    net._ttfs_spec = stages_to_spec(stages)  # for save()
    return net.to(next(model.parameters()).dtype)


def simulate(net: nn.Module, x: Tensor, steps: int | None = None) -> SimulationResult:
    """Step ``net`` ``(L+1)*T`` times the snnTorch way (``out = net(x_t)``); return the logits
    (the readout membrane at the end) and every neuron's spike time.

    The input is one current impulse at step 0: ``x_0 = x``, ``x_t = 0`` afterwards.
    """
    steps = num_steps(net) if steps is None else steps
    reset(net)
    recorder = SpikeTimeRecorder(net)
    zeros = torch.zeros_like(x)
    out = None
    try:
        for step in range(steps):
            recorder.step = step
            out = net(x if step == 0 else zeros)
    finally:
        recorder.close()
    logits = out[0] if isinstance(out, tuple) else out
    return SimulationResult(logits, recorder.times, recorder.T, steps, recorder.neurons)


def save(net: nn.Module, path: str | Path) -> None:
    """Save a network made by :func:`to_snntorch`; :func:`load` rebuilds it."""
    spec = getattr(net, "_ttfs_spec", None)
    if spec is None:
        raise ValueError("save() takes a network made by to_snntorch() or load()")
    save_exported(path, net, spec, "snntorch")


def load(path: str | Path, spike_grad=None) -> nn.Sequential:
    """Rebuild an exported snnTorch network from ``path`` (no surrogate or training code)."""
    data = read_exported(path, "snntorch")
    net = modules_from_stages(spec_to_stages(data["stages"]), spike_grad)
    net = net.to(getattr(torch, data["dtype"]))
    net.load_state_dict(data["state_dict"])
    net._ttfs_spec = data["stages"]
    return net
