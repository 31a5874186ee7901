"""Norse adapter: a TTFS neuron cell, temporal-kernel synapse and first-spike pooling.

Needs only the ``norse`` extra. Everything follows Norse's conventions: a pure functional core
(:func:`ttfs_feed_forward_step` over :class:`TTFSParameters` and :class:`TTFSState`), cells that
step as ``out, state = module(x_t, state)`` starting from ``state=None``, and a converted network
that is a ``norse.torch.SequentialState``.

>>> from ttfs_plugin.checkpoint import load_checkpoint
>>> from ttfs_plugin import norse as tnorse
>>> model, _ = load_checkpoint("runs/demo/checkpoint.pt")
>>> net = tnorse.to_norse(model)              # a norse.torch.SequentialState
>>> result = tnorse.simulate(net, images)     # (L+1)*T steps of out, state = net(x_t, state)
>>> result.logits.argmax(1), result.spike_counts

Time-stepped semantics: :mod:`ttfs_plugin.timestep` (SPEC §8).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor, nn

try:
    with warnings.catch_warnings():  # Norse 1.1 uses torch.jit.script, deprecated in torch 2.x
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
        from norse.torch.functional.threshold import threshold as norse_threshold
        from norse.torch.module.sequential import SequentialState
        from norse.torch.module.snn import SNNCell
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("ttfs_plugin.norse needs Norse: pip install 'ttfs-plugin[norse]'") from exc

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
from .kernel import TAU_MIN, threshold_table
from .layers import TemporalKernel
from .simulation import SimulationResult, SpikeTimeRecorder
from .stepped import SilentOutput, SynapseBase, num_steps, pooled_shape
from .timestep import (
    first_spike_pool_step,
    is_silent,
    neuron_step,
    straight_through,
    windows,
)

__all__ = ["TTFSParameters", "TTFSState", "ttfs_feed_forward_step", "initial_ttfs_state",
           "TTFSCell", "SynapseState", "TemporalKernelSynapse", "PoolState",
           "FirstSpikeMaxPool2d", "ReadoutState", "ReadoutIntegrator", "to_norse", "simulate",
           "num_steps", "save", "load"]


# --- the functional core ------------------------------------------------------------------------


class TTFSParameters(NamedTuple):
    """Parameters of a TTFS neuron layer (Norse style).

    ``layer_index`` ``l``: integrates in window ``l``, fires in window ``l+1``; ``T`` window
    length; ``tau``, ``td`` kernel time constant and delay (tensors, may be trainable; ``tau`` is
    clamped to ``TAU_MIN`` as in :class:`~ttfs_plugin.layers.TemporalKernel`); ``theta0``
    initial threshold; ``method``, ``alpha`` Norse's surrogate gradient (backward only).
    """

    layer_index: int
    T: int
    tau: Tensor
    td: Tensor
    theta0: float = 1.0
    method: str = "super"
    alpha: float = 100.0


class TTFSState(NamedTuple):
    """State of a TTFS neuron layer: membrane, who has fired (bool) and the global step."""

    mem: Tensor
    fired: Tensor
    step: int


def initial_ttfs_state(input_tensor: Tensor) -> TTFSState:
    """Zero membrane, nobody fired, step 0, shaped like ``input_tensor``."""
    return TTFSState(torch.zeros_like(input_tensor),
                     torch.zeros_like(input_tensor, dtype=torch.bool), 0)


def ttfs_feed_forward_step(input_tensor: Tensor, state: TTFSState | None, p: TTFSParameters,
                           norm: nn.Module | None = None, thresholds: Tensor | None = None,
                           zeros: Tensor | None = None) -> tuple[Tensor, TTFSState]:
    """One step of a TTFS neuron layer; returns ``(spikes, new_state)``.

    Integrate window (``w == p.layer_index``): ``mem += input``. Fire window: spike where
    ``mem >= thr[k]`` with ``thr = threshold_table(max(tau, TAU_MIN), td, T, theta0)``, once per
    neuron. Forward the rule is exact; backward a spike has the derivative of Norse's
    ``threshold(v, p.method, p.alpha)`` surrogate at ``v = mem - thr[k]``.

    ``norm`` (e.g. a TB batch norm) normalises the integrated membrane when firing starts;
    ``thresholds`` is the precomputed table (a cell passes its kernel's); ``zeros`` is returned
    as the spikes of silent steps.
    """
    if state is None:
        state = initial_ttfs_state(input_tensor)
    if thresholds is None:
        thresholds = threshold_table(p.tau.clamp_min(TAU_MIN), p.td, p.T, p.theta0)
    method, alpha = p.method, p.alpha
    spike_fn = straight_through(lambda v: norse_threshold(v, method, alpha))
    spikes, new = neuron_step(input_tensor, state, p.layer_index, thresholds, spike_fn,
                              zeros=zeros, norm=norm)
    return spikes, TTFSState(*new)


# --- modules ------------------------------------------------------------------------------------


class TTFSCell(SNNCell, SilentOutput):
    """TTFS neuron cell of spiking layer ``layer_index`` (Norse style, without time):
    ``spikes, state = cell(x, state)``, ``state=None`` to start.

    IF membrane without leak, decaying threshold ``thr[k] = theta0 * kappa(k)``, fires once.
    Integrates during window ``layer_index`` and fires during window ``layer_index + 1`` of the
    step counter in its :class:`TTFSState`; on every other step it does no work.

    Unlike Norse's cells, whose ``p`` is a plain tuple, ``tau`` and ``td`` are real
    ``nn.Parameter`` s of ``cell.kernel`` (a :class:`~ttfs_plugin.layers.TemporalKernel`, shared
    with the outgoing :class:`TemporalKernelSynapse` after export), so ``.to()``,
    ``parameters()`` and ``state_dict()`` cover them; ``cell.p`` is built from them on access.
    ``method`` / ``alpha`` pick Norse's surrogate gradient (``norse.torch.functional.threshold``).

    ``norm`` (optional, e.g. :class:`~ttfs_plugin.layers.TBBatchNorm1d`) normalises the
    integrated membrane once, when firing starts: the TB batch norm of a natively built network,
    which :func:`ttfs_plugin.training.spike_proxy_loss` pairs with this cell.
    """

    def __init__(self, layer_index: int, T: int = 32, tau: float = 10.0, td: float = 0.0,
                 theta0: float = 1.0, method: str = "super", alpha: float = 100.0,
                 kernel: TemporalKernel | None = None, norm: nn.Module | None = None,
                 layer_name: str | None = None) -> None:
        super().__init__(activation=ttfs_feed_forward_step, state_fallback=initial_ttfs_state,
                         p=None, dt=1.0)
        self.layer_index = int(layer_index)
        self.kernel = kernel if kernel is not None else TemporalKernel(T, tau, td, theta0)
        self.norm = norm
        self.layer_name = layer_name
        self.method = str(method)
        self.alpha = float(alpha)

    @property
    def p(self) -> TTFSParameters:
        """The cell's :class:`TTFSParameters`, built from its kernel's current parameters."""
        k = self.kernel
        return TTFSParameters(self.layer_index, k.T, k.tau, k.td, k.theta0, self.method,
                              self.alpha)

    @p.setter
    def p(self, value) -> None:
        if value is not None:  # SNNCell.__init__ assigns p=None
            raise AttributeError("TTFSCell.p is derived from cell.kernel; change cell.kernel.tau"
                                 " / cell.kernel.td or build a new cell")

    def firing_floor(self) -> Tensor:
        return self.kernel.firing_floor()

    def forward(self, input_tensor: Tensor, state: TTFSState | None = None
                ) -> tuple[Tensor, TTFSState]:
        if state is None:
            state = initial_ttfs_state(input_tensor)
        window, _ = windows(state.step, self.kernel.T)
        zeros = self._zeros_like(input_tensor.shape, input_tensor)
        if window not in (self.layer_index, self.layer_index + 1):  # idle: no work
            return zeros, state._replace(step=state.step + 1)
        return ttfs_feed_forward_step(input_tensor, state, self.p, norm=self.norm,
                                      thresholds=self.kernel.thresholds(), zeros=zeros)

    def extra_repr(self) -> str:
        name = f", layer_name={self.layer_name!r}" if self.layer_name else ""
        return f"layer_index={self.layer_index}, method={self.method!r}, alpha={self.alpha:g}{name}"


class SynapseState(NamedTuple):
    """State of a :class:`TemporalKernelSynapse`: the global step."""

    step: int


class TemporalKernelSynapse(SynapseBase):
    __doc__ = SynapseBase.__doc__ + """
    Norse style: ``current, state = synapse(spikes, state)``, the step counter in the state.
    """

    def forward(self, input_tensor: Tensor, state: SynapseState | None = None
                ) -> tuple[Tensor, SynapseState]:
        step = 0 if state is None else state.step
        return self.current(input_tensor, step), SynapseState(step + 1)


class PoolState(NamedTuple):
    """State of a :class:`FirstSpikeMaxPool2d`: which pooled units have emitted (or ``None``)."""

    emitted: Tensor | None


class FirstSpikeMaxPool2d(SilentOutput):
    """Max-pooling of spikes in which a pooled unit emits only at its first input spike.

    ``out, state = pool(spikes, state)``.
    """

    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        self.kernel_size = int(kernel_size)

    def forward(self, input_tensor: Tensor, state: PoolState | None = None
                ) -> tuple[Tensor, PoolState]:
        shape = pooled_shape(input_tensor, self.kernel_size)
        emitted = None if state is None else state.emitted
        if emitted is not None and emitted.shape != shape:
            emitted = None
        if is_silent(input_tensor):
            return self._zeros_like(shape, input_tensor), PoolState(emitted)
        out, emitted = first_spike_pool_step(input_tensor, emitted, self.kernel_size)
        return out, PoolState(emitted)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}"


class ReadoutState(NamedTuple):
    """State of a :class:`ReadoutIntegrator`: its membrane (the logits)."""

    mem: Tensor


class ReadoutIntegrator(nn.Module):
    """Non-spiking output layer: integrates its input current; its membrane is the logits.

    ``mem, state = readout(current, state)``.
    """

    def forward(self, input_tensor: Tensor, state: ReadoutState | None = None
                ) -> tuple[Tensor, ReadoutState]:
        mem = None if state is None else state.mem
        if mem is None or mem.shape != input_tensor.shape:
            mem = torch.zeros_like(input_tensor)
        if not is_silent(input_tensor):
            mem = mem + input_tensor
        return mem, ReadoutState(mem)


# --- conversion, simulation, saving -------------------------------------------------------------


def modules_from_stages(stages, method: str = "super", alpha: float = 100.0) -> SequentialState:
    """A ``SequentialState`` of Norse-style modules for export stages.

    ``SequentialState`` names its children ``"0"``, ``"1"``, …; each cell keeps its stage name as
    ``layer_name`` so spike times are reported under the surrogate's layer names.
    """
    modules: list[nn.Module] = []
    for st in stages:
        if isinstance(st, NeuronStage):
            modules.append(TTFSCell(st.index, kernel=st.kernel, method=method, alpha=alpha,
                                    layer_name=st.name))
        elif isinstance(st, SynapseStage):
            modules.append(TemporalKernelSynapse(st.kernel, st.source, st.op, st.bias))
        elif isinstance(st, MaxPoolStage):
            modules.append(FirstSpikeMaxPool2d(st.kernel_size))
        elif isinstance(st, ReadoutStage):
            modules.append(ReadoutIntegrator())
    return SequentialState(*modules)


def to_norse(model: nn.Module, method: str = "super", alpha: float = 100.0) -> SequentialState:
    """Convert a trained surrogate ``model`` into a Norse network (batch norm folded).

    The result steps with ``out, state = net(x_t, state)`` from ``state=None``; feed the image at
    step 0 and zeros after (see :func:`simulate`). Its output is the readout membrane (the
    logits).
    """
    stages = plan_network(model)
    net = modules_from_stages(stages, method, alpha)
    net._ttfs_spec = stages_to_spec(stages)  # for save()
    return net.to(next(model.parameters()).dtype)


def simulate(net: nn.Module, x: Tensor, steps: int | None = None) -> SimulationResult:
    """Step ``net`` ``(L+1)*T`` times the Norse way (``out, state = net(x_t, state)`` from
    ``state=None``); return the logits (the output at the last step) and every neuron's spike
    time.

    The input is one current impulse at step 0: ``x_0 = x``, ``x_t = 0`` afterwards. Runs with
    autograd as the caller has it: under ``torch.no_grad()`` for evaluation, without it to
    train through time on ``result.logits``.
    """
    steps = num_steps(net) if steps is None else steps
    recorder = SpikeTimeRecorder(net)
    zeros = torch.zeros_like(x)
    out, state = None, None
    try:
        for step in range(steps):
            recorder.step = step
            out, state = net(x if step == 0 else zeros, state)
    finally:
        recorder.close()
    return SimulationResult(out, recorder.times, recorder.T, steps, recorder.neurons)


def save(net: nn.Module, path: str | Path) -> None:
    """Save a network made by :func:`to_norse`; :func:`load` rebuilds it."""
    spec = getattr(net, "_ttfs_spec", None)
    if spec is None:
        raise ValueError("save() takes a network made by to_norse() or load()")
    save_exported(path, net, spec, "norse")


def load(path: str | Path, method: str = "super", alpha: float = 100.0) -> SequentialState:
    """Rebuild an exported Norse network from ``path`` (no surrogate or training code)."""
    data = read_exported(path, "norse")
    net = modules_from_stages(spec_to_stages(data["stages"]), method, alpha)
    net = net.to(getattr(torch, data["dtype"]))
    net.load_state_dict(data["state_dict"])
    net._ttfs_spec = data["stages"]
    return net
