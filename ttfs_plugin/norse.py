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
from typing import NamedTuple, cast

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

from . import export, window_schedule
from .errors import ConfigError
from .kernel import DEFAULT_KERNEL, DEFAULT_QUANTIZER, TAU_MIN, check_quantizer, threshold_table
from .layers import TemporalKernel
from .simulation import SimulationResult, run_simulation
from .stepped import (
    MaxPoolBase,
    NeuronBase,
    ReadoutBase,
    SynapseBase,
    impulse_train,
    input_spike_train,
    num_steps,
)
from .timestep import (
    NeuronState,
    PoolState,
    ReadoutState,
    SynapseState,
    as_current,
    check_input_mode,
    initial_neuron_state,
    layer_step,
    straight_through,
)

__all__ = ["TTFSParameters", "TTFSState", "ttfs_feed_forward_step", "initial_ttfs_state",
           "TTFSCell", "SynapseState", "TemporalKernelSynapse", "PoolState",
           "FirstSpikeMaxPool2d", "ReadoutState", "ReadoutIntegrator", "to_norse", "simulate",
           "num_steps", "impulse_train", "input_spike_train", "save", "load", "BACKEND"]


# --- the functional core ------------------------------------------------------------------------


class TTFSParameters(NamedTuple):
    """Parameters of a TTFS neuron layer (Norse style).

    ``layer_index`` ``l``: integrates in window ``l``, fires in window ``l+1``; ``T`` window
    length; ``tau``, ``td`` kernel time constant and delay (floats or tensors, may be trainable;
    ``tau`` is clamped to ``TAU_MIN`` as in :class:`~ttfs_plugin.layers.TemporalKernel`);
    ``theta0`` initial threshold; ``method``, ``alpha`` Norse's surrogate gradient (backward
    only); ``norm`` an optional module applied to the integrated membrane when firing starts (a
    TB batch norm); ``input_mode`` how layer 0 takes input (``"analog"`` or ``"spikes"``);
    ``check_range`` (layer 0) refuses analog input outside ``[0, 1]`` (NaN and inf are always
    refused at layer 0); ``quantizer`` picks the threshold table (SPEC §3: ``"ceil"`` or
    ``"round"``); ``relay`` makes layer 0 of an analog-input network (no spikes: it passes its
    input on at the start of window 1, SPEC §8).
    """

    layer_index: int
    T: int
    tau: Tensor | float
    td: Tensor | float
    theta0: float = DEFAULT_KERNEL.theta0
    method: str = "super"
    alpha: float = 100.0
    norm: nn.Module | None = None
    input_mode: str = "analog"
    check_range: bool = False
    quantizer: str = DEFAULT_QUANTIZER
    relay: bool = False


#: State of a TTFS neuron layer: ``mem``, ``fired`` (bool) and ``step`` (0-dim int64), all
#: tensors (the same type as :class:`ttfs_plugin.timestep.NeuronState`).
TTFSState = NeuronState


def initial_ttfs_state(input_tensor: Tensor) -> TTFSState:
    """Zero membrane, nobody fired, step 0, shaped like ``input_tensor`` (dense, float)."""
    dtype = input_tensor.dtype if input_tensor.is_floating_point() else torch.get_default_dtype()
    return initial_neuron_state(as_current(input_tensor, dtype))


def _fresh_state(input_tensor: Tensor) -> TTFSState:
    """``SNNCell`` 's fallback: an empty state, which the step replaces by a zero state of the
    converted input (so a bool, int or sparse input never shapes the membrane)."""
    empty = torch.zeros(0)
    return NeuronState(empty, empty.bool(), initial_neuron_state(empty).step)


def _tensor(value, dtype=None) -> Tensor:
    return value if isinstance(value, Tensor) else torch.tensor(float(value), dtype=dtype)


def ttfs_feed_forward_step(input_tensor: Tensor, state: TTFSState | None, p: TTFSParameters,
                           dt: float = 1.0, *, zeros: Tensor | None = None
                           ) -> tuple[Tensor, TTFSState]:
    """One step of a TTFS neuron layer; returns ``(spikes, new_state)``. The signature is
    Norse's ``SNNCell`` activation contract ``(input, state, p, dt)``.

    Integrate window (``w == p.layer_index``): ``mem += input``. Fire window: spike where
    ``mem >= thr[k]`` with ``thr = threshold_table(max(tau, TAU_MIN), td, T, theta0, quantizer)``,
    once per
    neuron. Forward the rule is exact; backward a spike has the derivative of Norse's
    ``threshold(v, p.method, p.alpha)`` surrogate at ``v = mem - thr[k]``. Bool, int and sparse
    inputs become dense floats of the parameters' dtype; layer 0 refuses a non-finite input at
    step 0 (and, with ``p.check_range``, one outside ``[0, 1]``). TTFS time counts steps
    (``tau`` and ``td`` are in steps), so ``dt`` must be 1.
    """
    if float(dt) != 1.0:
        raise ConfigError(f"dt={dt}: TTFS time counts steps (tau, td and T are in steps); "
                          "use dt=1")
    tau = _tensor(p.tau)
    td = _tensor(p.td, tau.dtype)
    x = as_current(input_tensor, tau.dtype)
    if state is None or state.mem.numel() == 0:
        state = initial_ttfs_state(x)
    T, theta0, quantizer = int(p.T), float(p.theta0), check_quantizer(p.quantizer)

    def table() -> Tensor:
        return threshold_table(tau.clamp_min(TAU_MIN), td, T, theta0, quantizer)

    method, alpha = p.method, p.alpha
    spike_fn = straight_through(lambda v: norse_threshold(v, method, alpha))
    return layer_step(x, state, int(p.layer_index), T, table, spike_fn, zeros=zeros, norm=p.norm,
                      input_mode=check_input_mode(p.input_mode), check_range=p.check_range,
                      relay=bool(p.relay))


# --- modules ------------------------------------------------------------------------------------


class TTFSCell(SNNCell, NeuronBase):
    """TTFS neuron cell of spiking layer ``layer_index`` (Norse style, without time):
    ``spikes, state = cell(x, state)``, ``state=None`` to start.

    IF membrane without leak, decaying threshold ``thr[k] = theta0 * kappa(k)`` (``quantizer=
    "round"``: ``kappa(k + 1/2)``), fires once.
    Integrates during window ``layer_index`` and fires during window ``layer_index + 1`` of the
    step counter in its :class:`TTFSState`; on every other step it does no work. Its activation
    is :func:`ttfs_feed_forward_step`, so Norse's own ``SNNCell.forward`` gives the same result.

    Unlike Norse's cells, whose ``p`` is a plain tuple, ``tau`` and ``td`` are real
    ``nn.Parameter`` s of ``cell.kernel`` (a :class:`~ttfs_plugin.layers.TemporalKernel`, shared
    with the outgoing :class:`TemporalKernelSynapse` after export), so ``.to()``,
    ``parameters()`` and ``state_dict()`` cover them; ``cell.p`` is built from them on access.
    ``method`` / ``alpha`` pick Norse's surrogate gradient (``norse.torch.functional.threshold``).

    ``norm`` (optional, e.g. :class:`~ttfs_plugin.layers.TBBatchNorm1d`) normalises the
    integrated membrane once, when firing starts: the TB batch norm of a natively built network,
    which :func:`ttfs_plugin.training.spike_proxy_loss` pairs with this cell. ``input_mode``
    (layer 0): ``"analog"`` impulse at step 0 or ``"spikes"`` (a first-spike train in window 0).
    Layer 0 refuses NaN or inf at step 0; ``check_range=True`` (set on the input cell of
    :func:`to_norse` and :func:`load`) also refuses values outside ``[0, 1]``.
    """

    def __init__(self, layer_index: int, T: int = DEFAULT_KERNEL.T,
                 tau: float = DEFAULT_KERNEL.tau0, td: float = DEFAULT_KERNEL.td0,
                 theta0: float = DEFAULT_KERNEL.theta0, method: str = "super", alpha: float = 100.0,
                 kernel: TemporalKernel | None = None, norm: nn.Module | None = None,
                 layer_name: str | None = None, input_mode: str = "analog",
                 is_output: bool = False, check_range: bool = False,
                 quantizer: str = DEFAULT_QUANTIZER, relay: bool = False) -> None:
        super().__init__(  # type: ignore[call-arg]  # SNNCell.__init__ (untyped)
            activation=ttfs_feed_forward_step, state_fallback=_fresh_state, p=None, dt=1.0,
            activation_sparse=ttfs_feed_forward_step)
        if kernel is None:
            kernel = TemporalKernel(T, tau, td, theta0, quantizer=quantizer)
        self._init_neuron(layer_index, kernel, norm, layer_name, input_mode, is_output,
                          check_range, relay)
        self.method = str(method)
        self.alpha = float(alpha)

    @property
    def p(self) -> TTFSParameters:
        """The cell's :class:`TTFSParameters`, built from its kernel's current parameters."""
        k = self.kernel
        return TTFSParameters(self.layer_index, k.T, k.tau, k.td, k.theta0,
                              self.method, self.alpha, self.norm, self.input_mode,
                              self.check_range, k.quantizer, self.relay)

    @p.setter
    def p(self, value) -> None:
        if value is not None:  # SNNCell.__init__ assigns p=None
            raise AttributeError("TTFSCell.p is derived from cell.kernel; change cell.kernel.tau"
                                 " / cell.kernel.td or build a new cell")

    def spike_function(self):
        method, alpha = self.method, self.alpha
        return straight_through(lambda v: norse_threshold(v, method, alpha))

    def forward(self, input_tensor: Tensor, state: TTFSState | None = None
                ) -> tuple[Tensor, TTFSState]:
        return self.advance(input_tensor, state)

    def extra_repr(self) -> str:
        name = f", layer_name={self.layer_name!r}" if self.layer_name else ""
        return (NeuronBase.extra_repr(self) + f", method={self.method!r}, alpha={self.alpha:g}"
                + name)


class TemporalKernelSynapse(SynapseBase):
    __doc__ = (SynapseBase.__doc__ or "") + """
    Norse style: ``current, state = synapse(spikes, state)``, the step counter in the state.
    """

    def forward(self, input_tensor: Tensor, state: SynapseState | None = None
                ) -> tuple[Tensor, SynapseState]:
        return self.advance(input_tensor, state)


class FirstSpikeMaxPool2d(MaxPoolBase):
    __doc__ = ((MaxPoolBase.__doc__ or "")
               + "\n    Norse style: ``out, state = pool(spikes, state)``.\n")

    def forward(self, input_tensor: Tensor, state: PoolState | None = None
                ) -> tuple[Tensor, PoolState]:
        return self.advance(input_tensor, state)


class ReadoutIntegrator(ReadoutBase):
    __doc__ = ((ReadoutBase.__doc__ or "")
               + "\n    Norse style: ``mem, state = readout(current, state)``.\n")

    def forward(self, input_tensor: Tensor, state: ReadoutState | None = None
                ) -> tuple[Tensor, ReadoutState]:
        return self.advance(input_tensor, state)


# --- conversion, simulation, saving -------------------------------------------------------------


def _cell(stage: export.NeuronStage, method: str = "super", alpha: float = 100.0,
          **_) -> TTFSCell:
    return TTFSCell(stage.index, kernel=stage.kernel, method=method, alpha=alpha,
                    layer_name=stage.name, input_mode=stage.input_mode, is_output=stage.output,
                    check_range=stage.index == 0, relay=stage.relay)


#: How the shared export builds Norse modules (one factory per stage kind). ``SequentialState``
#: names its children "0", "1", …; each module keeps its stage name as ``layer_name``.
BACKEND = export.Backend(
    name="norse",
    factories={
        "neuron": _cell,
        "synapse": TemporalKernelSynapse.from_stage,
        "maxpool": FirstSpikeMaxPool2d.from_stage,
        "readout": ReadoutIntegrator.from_stage,
    },
    container=lambda modules: SequentialState(*(m for _, m in modules)),
)


def to_norse(model: nn.Module, method: str = "super", alpha: float = 100.0,
             output: str = "membrane", input_mode: str = "analog",
             window_batched: bool = False) -> SequentialState:
    """Convert a trained surrogate ``model`` into a Norse network (batch norm folded).

    The result steps with ``out, state = net(x_t, state)`` from ``state=None``.
    ``output="membrane"``: its output is the readout membrane (the logits after ``(L+1)*T``
    steps); ``"spikes"``: a TTFS output layer whose first spike is the class (``(L+2)*T`` steps;
    its membrane, the logits, is ``state[-1].mem``). ``input_mode="analog"``: feed the image at
    step 0 and zeros after; ``"spikes"``: a first-spike train during the first ``T`` steps.
    Like the surrogate, the converted network refuses an analog input that is not finite or not
    within ``[0, 1]``, and one whose shape does not fit its first layer (an ``InputShapeError``
    at step 0).

    ``window_batched=True`` (opt-in; off by default) makes every synapse apply its weight op
    once per window on the decoded spike values instead of once per step: the same spike times
    and predictions (exactly in float64; float32 up to summation order), several times faster,
    but a layer's membrane then moves only at the last step of its integration window
    (:class:`~ttfs_plugin.stepped.SynapseBase`).
    """
    return export.convert(model, BACKEND, output, input_mode, method=method, alpha=alpha,
                          window_batched=window_batched)


def _logits(net: nn.Module):
    last = list(net.children())[-1]

    def read(out, state):
        return state[-1].mem if isinstance(last, TTFSCell) else out
    return read


def simulate(net: nn.Module, x: Tensor, steps: int | None = None, native_loop: bool = False
             ) -> SimulationResult:
    """Step ``net`` ``num_steps(net)`` times the Norse way (``out, state = net(x_t, state)`` from
    ``state=None``); return the logits and every neuron's spike time.

    ``x``: the input batch (analog input: one current impulse at step 0, zeros afterwards), or
    for a network with ``input_mode="spikes"`` its spike train ``(T, B, ...)``. Runs with
    autograd as the caller has it: under ``torch.no_grad()`` for evaluation (spike times once
    per fire window, cached tables: several times faster), without it to train through time on
    ``result.logits`` (every step's surrogate spike, and the graph kept).

    Under ``no_grad``, a network as :func:`to_norse` or :func:`load` makes it (no hooks on its
    modules, analog input) runs window by window instead (:mod:`ttfs_plugin.window_schedule`):
    the loop's logits and spike times bit for bit, idle modules not called.
    ``native_loop=True`` always steps ``net(x_t, state)``.
    """
    chain = None if native_loop else window_schedule.chain_of(net, _plain_sequential_state,
                                                              _as_converted)
    return run_simulation(net, x, lambda x_t, state: net(x_t, state), steps, _logits(net),
                          chain=chain)


def _plain_sequential_state(net: nn.Module) -> bool:
    """Norse's ``SequentialState`` calling every child with its state, returning the last
    output (no hidden outputs, no state hooks)."""
    if type(net) is not SequentialState:
        return False
    sequential = cast(SequentialState, net)
    return (not sequential.return_hidden and not getattr(sequential, "forward_state_hooks", None)
            and all(sequential.stateful_layers))


def _as_converted(module: nn.Module, last: bool) -> bool:
    return type(module) in (TTFSCell, TemporalKernelSynapse, FirstSpikeMaxPool2d,
                            ReadoutIntegrator)


def save(net: nn.Module, path: str | Path) -> None:
    """Save a network of the plugin's Norse modules; :func:`load` rebuilds it."""
    export.save(net, path, BACKEND)


def load(path: str | Path, method: str = "super", alpha: float = 100.0,
         window_batched: bool = False) -> SequentialState:
    """Rebuild an exported Norse network from ``path`` (no surrogate or training code);
    ``window_batched`` as in :func:`to_norse`."""
    return export.load(path, BACKEND, method=method, alpha=alpha,
                       window_batched=window_batched)
