"""Module bases the snnTorch and Norse adapters share (framework-free).

Each base does one step over explicit, all-tensor state (``out, state = base.advance(x,
state)``); an adapter adds only its framework's calling convention on top: snnTorch keeps the
state inside the module (``init_hidden=True``), Norse passes it in and out. Every base also
describes itself as its export stage (``to_stage()``), so any network of these modules can be
saved (:func:`ttfs_plugin.export.save`).

The run clock: every module of one network shares a :class:`RunClock` (bound by
:func:`bind_clock`, which the adapters' ``to_*``, ``load``, ``reset`` and ``simulate`` call).
When the input layer starts a new run — first call, a new batch shape, or new input after all
``num_steps(net)`` steps are done — it advances the clock's run number, and every other module
drops its state at its next call. So a network whose hidden state nobody reset (snnTorch's
``utils.reset`` does not reach these modules) still answers the new batch, never a stale one.

Kernel and threshold tables: a module builds them once and keeps them while its kernel's
parameters are unchanged (:class:`KernelTables`: the parameters' identity, version counter and
storage, ``theta0``, ``quantizer``, ``T``), instead of a dozen tiny ops per active step; any
edit, ``load_state_dict`` or ``.to()`` builds them again. Where autograd needs them (training
through time), they are built fresh every step as before.
"""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import Tensor, nn

from .errors import InputShapeError
from .export import ExportError, MaxPoolStage, NeuronStage, ReadoutStage, SynapseStage
from .layers import TemporalKernel, check_intensities
from .timestep import (
    NeuronState,
    PoolState,
    ReadoutState,
    SpikeFn,
    SynapseState,
    as_current,
    check_input_mode,
    fast_paths_enabled,
    first_spike_pool_step,
    heaviside,
    initial_neuron_state,
    input_allowed,
    is_silent,
    layer_step,
    next_step,
    readout_step,
    silent_zeros,
    step_tensor,
    synapse_step,
    window_synapse_step,
    windows,
)


class KernelTables:
    """A kernel's ``kappa`` and threshold tables, kept for as long as its parameters are the
    same (plain Python, no state-dict entry).

    The key: the values of ``tau`` and ``td`` (any edit: in place, ``load_state_dict``, a new
    parameter, and also through ``.data``, which a version counter does not see), their dtype
    and device (``.to()``), and ``theta0``, ``quantizer``, ``T``: all the tables depend on.
    Reading the values is a few microseconds on the CPU (on a GPU a synchronisation, once per
    table look-up). Tables are built under ``no_grad`` (values identical) and the threshold
    table is tagged with whether it is non-increasing (what the spike-time fast path needs).
    Kernels whose table methods are overridden are not cached.
    """

    __slots__ = ("key", "tables")

    def __init__(self) -> None:
        self.key: tuple = ()
        self.tables: dict[str, Tensor] = {}

    def get(self, kernel: TemporalKernel, which: str) -> Tensor:
        """``kernel.kernel()`` (``which="kernel"``) or ``kernel.thresholds()``, from the cache
        where that is safe."""
        tau, td = kernel.tau, kernel.td
        if (not fast_paths_enabled() or not _plain_kernel(kernel)
                or (torch.is_grad_enabled() and (tau.requires_grad or td.requires_grad))):
            return getattr(kernel, which)()
        key = (tau.detach().tolist(), td.detach().tolist(), tau.dtype, tau.device, td.dtype,
               td.device, kernel.theta0, kernel.quantizer, kernel.T)
        if self.key != key:
            self.key, self.tables = key, {}
        table = self.tables.get(which)
        if table is None:
            with torch.no_grad():
                table = getattr(kernel, which)()
            if which == "thresholds":
                table._ttfs_monotone = bool((table[1:] <= table[:-1]).all())  # a tag
            self.tables[which] = table
        return table


def _plain_kernel(kernel: TemporalKernel) -> bool:
    """A :class:`TemporalKernel` whose tables come from ``tau``, ``td``, ``theta0``,
    ``quantizer`` and ``T`` alone (its table methods not overridden)."""
    cls = type(kernel)
    return all(getattr(cls, name, None) is getattr(TemporalKernel, name)
               for name in ("kernel", "thresholds", "effective_tau"))


class RunClock:
    """The run number and length every module of one network shares (plain Python, no state
    dict entry). ``total_steps`` is ``num_steps(net)``, or ``None`` for an unbound module."""

    __slots__ = ("run", "total_steps")

    def __init__(self, total_steps: int | None = None) -> None:
        self.run = 0
        self.total_steps = total_steps


class Stepped(nn.Module):
    """A time-stepped module: a cached silent output and a place on a run clock."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = RunClock()
        self._seen_run = 0
        self._zeros: Tensor | None = None
        self._tables = KernelTables()

    def _table(self, which: str) -> Tensor:
        """This module's kernel's ``which`` table (``"kernel"`` or ``"thresholds"``), cached."""
        tables = self.__dict__.get("_tables")
        if tables is None:  # a module made before tables were cached (an old pickle)
            tables = KernelTables()
            self._keep("_tables", tables)
        return tables.get(cast(TemporalKernel, self.kernel), which)

    def _thresholds(self) -> Tensor:
        return self._table("thresholds")

    def _keep(self, name: str, value) -> None:
        """Set a plain (non-parameter, non-buffer) attribute without ``nn.Module.__setattr__`` 's
        bookkeeping: hidden state changes every step, and that lookup was a tenth of a run."""
        self.__dict__[name] = value

    def _zeros_like(self, shape, like: Tensor) -> Tensor:
        zeros = silent_zeros(shape, like, self._zeros)
        self._keep("_zeros", zeros)
        return zeros

    def _run_changed(self) -> bool:
        """True once after the clock started a new run: drop the hidden state."""
        if self._seen_run != self.clock.run:
            self._keep("_seen_run", self.clock.run)
            return True
        return False


class NeuronBase(Stepped):
    """TTFS neuron layer ``layer_index``: IF membrane without leak, decaying threshold
    ``thr[k] = theta0 * kappa(k)``, fires once. Integrates in window ``layer_index``, fires in
    window ``layer_index + 1``; does no work on other steps.

    ``input_mode`` (layer 0 only): ``"analog"`` — one current impulse at step 0; ``"spikes"`` — a
    first-spike train during window 0 (see :data:`ttfs_plugin.timestep.INPUT_MODES`).
    ``norm`` (optional, e.g. a TB batch norm) normalises the integrated membrane once, when
    firing starts; ``output=True`` marks the spiking output layer; ``relay=True`` makes layer 0
    of an analog-input network, which emits no spikes and passes its input on unchanged at the
    start of window 1 (SPEC §8).

    Layer 0 refuses a non-finite analog input at step 0; with ``check_range`` (what
    ``to_snntorch`` / ``to_norse`` / ``load`` give the input layer, the surrogate's own input
    contract) also values outside ``[0, 1]``. Without it, a hand-built layer 0 integrates any
    finite value (the clipped and pruned regions of the encoder).
    """

    def _init_neuron(self, layer_index: int, kernel: TemporalKernel,
                     norm: nn.Module | None = None, layer_name: str | None = None,
                     input_mode: str = "analog", is_output: bool = False,
                     check_range: bool = False, relay: bool = False) -> None:
        """Set up the neuron (called from the adapter class's ``__init__``, after its
        framework base, so that cooperative ``__init__`` chains stay argument-free)."""
        self.layer_index = int(layer_index)
        if self.layer_index < 0:
            raise ValueError(f"layer_index must be >= 0, got {layer_index}")
        self.kernel = kernel
        self.norm = norm
        self.layer_name = layer_name
        self.input_mode = check_input_mode(input_mode)
        if self.input_mode != "analog" and self.layer_index != 0:
            raise ValueError("input_mode applies to layer 0 (the input layer) only")
        self.check_range = bool(check_range)
        if self.check_range and self.layer_index != 0:
            raise ValueError("check_range applies to layer 0 (the input layer) only")
        self.is_output = bool(is_output)
        self.relay = bool(relay)
        if self.relay and (self.layer_index != 0 or self.input_mode != "analog"):
            raise ValueError("relay applies to layer 0 of an analog-input network only (it "
                             "takes the image, not a spike train)")
        if self.relay and float(kernel.td.detach()) != 0.0:
            raise ValueError("a relay's kernel must have td = 0, so that kappa(0) = 1 passes "
                             "the input unchanged")

    def firing_floor(self) -> Tensor:
        return self.kernel.firing_floor()

    def spike_function(self) -> SpikeFn:
        return heaviside

    def advance(self, x: Tensor, state: NeuronState | None) -> tuple[Tensor, NeuronState]:
        """One step from explicit state (``None``: a fresh run)."""
        x = as_current(x, self.kernel.tau.dtype)
        if state is None or state.mem.numel() == 0:
            state = initial_neuron_state(x)
        T = self.kernel.T
        idle = int(state.step) // T - self.layer_index not in (0, 1)
        return layer_step(x, state, self.layer_index, T, self._thresholds,
                          heaviside if idle else self.spike_function(),  # idle: not even built
                          zeros=self._zeros_like(x.shape, x), norm=self.norm,
                          input_mode=self.input_mode, check_range=self.check_range,
                          relay=self.relay)

    def starts_new_run(self, x: Tensor, state: NeuronState | None) -> bool:
        """For the input layer: does ``x`` start a new run (new shape, or input after the end)?"""
        if state is None or state.mem.shape != x.shape:
            return True
        total = self.clock.total_steps
        step = int(state.step)
        if total is None or step < total or input_allowed(step, self.kernel.T, self.input_mode):
            return False
        return bool((as_current(x, state.mem.dtype) != 0).any())

    def to_stage(self) -> NeuronStage:
        if self.norm is not None:
            raise ExportError(f"{self.layer_name or 'a neuron'} holds a norm module, which an "
                              "exported file cannot describe; convert the surrogate model "
                              "instead (batch norm is folded there)")
        return NeuronStage(self.layer_name or f"layer{self.layer_index}", self.layer_index,
                           self.kernel, self.input_mode, self.is_output, self.relay)

    def extra_repr(self) -> str:
        extra = f", input_mode={self.input_mode!r}" if self.input_mode != "analog" else ""
        extra += ", check_range=True" if self.check_range else ""
        extra += ", output layer" if self.is_output else ""
        extra += ", relay (analog input)" if self.relay else ""
        return f"layer_index={self.layer_index}{extra}"


class SynapseBase(Stepped):
    """Carries the spikes of layer ``source_index`` into the next layer: a spike at local time
    ``k`` arrives as ``kappa(k)``, through the linear ``op`` (``None``: identity).

    The bias (taken from ``op`` when it has one) enters once, at the first step of the target's
    integration window. ``op`` runs only while the source fires; other steps return a silent
    zero tensor.

    ``window_batched=True`` (opt-in, off by default): ``op`` runs once per window, at its last
    step, on the decoded spike values (:func:`ttfs_plugin.timestep.window_synapse_step`): the
    same spike times and predictions (float64; float32 up to summation order) in far fewer weight
    ops, but the target's membrane moves only at that step, so its per-step trace is not the
    exact simulation's (and nothing reaches the target before the window ends).
    """

    _shape: torch.Size  # the output shape per sample, kept by _output_shape
    _shape_key: tuple[int, ...]

    def __init__(self, kernel: TemporalKernel, source_index: int, op: nn.Module | None = None,
                 bias: Tensor | None = None, layer_name: str | None = None,
                 window_batched: bool = False) -> None:
        super().__init__()
        self.kernel = kernel
        self.source_index = int(source_index)
        self.layer_name = layer_name
        self.window_batched = bool(window_batched)
        op = op if op is not None else nn.Identity()
        last = op[-1] if isinstance(op, nn.Sequential) and len(op) else op
        last_bias = getattr(last, "bias", None)
        if last_bias is not None:
            if bias is not None:
                raise ValueError("give the bias either inside op or as bias=, not both")
            bias = last_bias.detach().clone()
            # torch types Module.__setattr__ as Tensor | Module; None unsets the parameter
            last.bias = None  # type: ignore[assignment]
        self.op = op
        self.bias = nn.Parameter(bias.detach().clone()) if bias is not None else None

    def advance(self, spikes: Tensor, state: SynapseState | None
                ) -> tuple[Tensor, SynapseState]:
        step = step_tensor(0) if state is None else state.step
        window, _ = windows(step, self.kernel.T)
        current = None
        new_state = None
        if window == self.source_index + 1:  # else idle: not even the kernel table is built
            spikes = as_current(spikes, self.kernel.tau.dtype)
            if self.window_batched:
                current, new_state = window_synapse_step(
                    spikes, state if state is not None else SynapseState(step),
                    self.source_index, self._table("kernel"), self.op, self.bias)
            else:
                current = synapse_step(spikes, int(step), self.source_index,
                                       self._table("kernel"), self.op, self.bias)
        if current is None:
            current = self._zeros_like(self._output_shape(spikes), spikes)
        return current, new_state if new_state is not None else SynapseState(next_step(step))

    def _output_shape(self, spikes: Tensor) -> torch.Size:
        """Shape of ``op(spikes)``, from a one-sample probe whenever the input shape changes
        (at step 0 of a run: so a wrong input shape is an ``InputShapeError`` there)."""
        key = tuple(spikes.shape)
        if getattr(self, "_shape_key", None) != key:
            self._check_fits(spikes)
            with torch.no_grad():
                probe = torch.zeros(1, *spikes.shape[1:], dtype=self.kernel.tau.dtype,
                                    device=spikes.device)
                try:
                    out = self.op(probe)
                except RuntimeError as exc:  # a shape the checks above do not foresee
                    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else "error"
                    raise self._misfit(spikes, f"does not fit {{layer}} ({detail})") from None
                self._keep("_shape", out.shape[1:])
            self._keep("_shape_key", key)
        return torch.Size((spikes.shape[0], *self._shape))

    def _op_parts(self) -> list[nn.Module]:
        parts = list(self.op) if isinstance(self.op, nn.Sequential) else [self.op]
        return [m for m in parts if not isinstance(m, (nn.Identity, nn.Dropout))]

    def _check_fits(self, spikes: Tensor) -> None:
        """``InputShapeError`` when ``spikes`` cannot be what ``op`` 's first layer takes: the
        rank, the channels of a ``Conv2d``, the values per sample of a (flattened) ``Linear``."""
        shape = tuple(spikes.shape)
        if len(shape) < 2:
            raise self._misfit(spikes, "has no batch dimension; feed a batch (B, ...), e.g. "
                                       "x.unsqueeze(0)")
        parts = self._op_parts()
        pooled = any(isinstance(m, nn.AvgPool2d) for m in parts)
        rest = [m for m in parts if not isinstance(m, nn.AvgPool2d)]
        first = rest[0] if rest else None
        if isinstance(first, nn.Conv2d):
            c = first.in_channels
            if len(shape) != 4:
                raise self._misfit(
                    spikes, f"is {len(shape)}-D where {{layer}} takes (B, {c}, H, W); add the "
                    "missing dimension (x.unsqueeze(1) for a batch of one-channel images, "
                    "x.unsqueeze(0) for one image)")
            if shape[1] != c:
                raise self._misfit(spikes, f"has {shape[1]} channels where {{layer}} expects "
                                           f"{c}; feed (B, {c}, H, W)")
        elif (isinstance(first, nn.Flatten) and first.start_dim == 1 and first.end_dim == -1
              and not pooled and len(rest) > 1 and isinstance(rest[1], nn.Linear)):
            values, wanted = math.prod(shape[1:]), rest[1].in_features
            if values != wanted:
                raise self._misfit(spikes, f"has {values} values per sample where {{layer}} "
                                           f"takes {wanted}{{hint}}")
        elif isinstance(first, nn.Linear) and not pooled and shape[-1] != first.in_features:
            raise self._misfit(spikes, f"has {shape[-1]} features (last dimension) where "
                                       f"{{layer}} takes {first.in_features}")

    def _misfit(self, spikes: Tensor, problem: str) -> InputShapeError:
        """The error for ``spikes`` that do not fit ``op`` (``{layer}`` in ``problem`` names
        it): worded for the network's input at the first synapse, for a hidden layer's spikes
        elsewhere (most likely an input image of another size than the network's)."""
        kinds = [type(m).__name__ for m in self._op_parts()]
        weights = [i for i, k in enumerate(kinds) if k in ("Conv2d", "Linear")]
        op = ""
        if weights:
            i = weights[0]
            op = f" ({kinds[i]}" + (f" after {', '.join(kinds[:i])})" if i else ")")
        shape = tuple(spikes.shape)
        if self.source_index == 0:
            return InputShapeError(
                f"input of shape {shape} "
                + problem.replace("{layer}", f"the network's first layer{op}")
                .replace("{hint}", "; check the channel count and image size"))
        name = f"{self.layer_name or f'synapse {self.source_index}'}{op}"
        hint = "; is the input image of the size the network was built for?"
        return InputShapeError(
            f"the output of layer {self.source_index} (shape {shape}) "
            + problem.replace("{layer}", name).replace("{hint}", "") + hint)

    @classmethod
    def from_stage(cls, stage: SynapseStage, window_batched: bool = False, **_):
        """The adapter's synapse for an export stage (other adapter options do not apply)."""
        return cls(stage.kernel, stage.source, stage.op, stage.bias, stage.name,
                   window_batched=window_batched)

    def to_stage(self) -> SynapseStage:
        return SynapseStage(self.layer_name or f"synapse{self.source_index}", self.source_index,
                            self.kernel, self.op, self.bias)

    def extra_repr(self) -> str:
        batched = ", window_batched=True" if self.window_batched else ""
        return f"source_index={self.source_index}{batched}"


def pooled_shape(shape: tuple[int, ...] | torch.Size, kernel_size: int) -> tuple[int, ...]:
    """The shape a ``kernel_size`` max-pool makes of inputs shaped ``shape``."""
    return (*shape[:-2], shape[-2] // kernel_size, shape[-1] // kernel_size)


class MaxPoolBase(Stepped):
    """Max-pooling of spikes in which a pooled unit emits only at its first input spike."""

    def __init__(self, kernel_size: int, layer_name: str | None = None) -> None:
        super().__init__()
        self.kernel_size = int(kernel_size)
        self.layer_name = layer_name

    def advance(self, spikes: Tensor, state: PoolState | None) -> tuple[Tensor, PoolState]:
        shape = pooled_shape(spikes.shape, self.kernel_size)
        if state is None or tuple(state.emitted.shape) != tuple(shape):
            state = PoolState(torch.zeros(shape, dtype=torch.bool, device=spikes.device))
        if is_silent(spikes):
            return self._zeros_like(shape, spikes), state
        if not spikes.is_floating_point():
            spikes = as_current(spikes, torch.get_default_dtype())
        out, emitted = first_spike_pool_step(spikes, state.emitted, self.kernel_size)
        return out, PoolState(emitted)

    @classmethod
    def from_stage(cls, stage: MaxPoolStage, **_):
        return cls(stage.kernel_size, stage.name)

    def to_stage(self) -> MaxPoolStage:
        return MaxPoolStage(self.layer_name or "maxpool", self.kernel_size)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}"


class ReadoutBase(Stepped):
    """Non-spiking output layer ``layer_index = L``: integrates its input current; its membrane
    is the logits (held after the last step)."""

    def __init__(self, layer_index: int = 0, layer_name: str | None = None) -> None:
        super().__init__()
        self.layer_index = int(layer_index)
        self.layer_name = layer_name

    def advance(self, current: Tensor, state: ReadoutState | None
                ) -> tuple[Tensor, ReadoutState]:
        mem = readout_step(current, None if state is None else state.mem)
        return mem, ReadoutState(mem)

    @classmethod
    def from_stage(cls, stage: ReadoutStage, **_):
        return cls(stage.index, stage.name)

    def to_stage(self) -> ReadoutStage:
        return ReadoutStage(self.layer_name or "readout", self.layer_index)

    def extra_repr(self) -> str:
        return f"layer_index={self.layer_index}"


def neurons_of(net: nn.Module) -> list[NeuronBase]:
    return [m for m in net.modules() if isinstance(m, NeuronBase)]


def num_steps(net: nn.Module) -> int:
    """``(L+1)*T`` for a converted or hand-built network (``(L+2)*T`` with a spiking output)."""
    return run_length(neurons_of(net))


def run_length(neurons: list[NeuronBase]) -> int:
    """``(max layer_index + 2) * T``: the steps a run of these neurons takes."""
    if not neurons:
        raise ValueError("the network has no TTFS neuron")
    return (max(m.layer_index for m in neurons) + 2) * neurons[0].kernel.T


def bind_clock(net: nn.Module) -> RunClock:
    """Give every time-stepped module of ``net`` one shared :class:`RunClock` (a fresh run)."""
    clock = RunClock(num_steps(net))
    for module in net.modules():
        if isinstance(module, Stepped):
            module.clock = clock
            module._seen_run = clock.run
    return clock


def impulse_train(x: Tensor, steps: int) -> Tensor:
    """``(steps, *x.shape)``: ``x`` at step 0 and zeros after (the analog input convention)."""
    train = torch.zeros(steps, *x.shape, dtype=x.dtype, device=x.device)
    train[0] = x
    return train


def input_spike_train(x: Tensor, net: nn.Module) -> Tensor:
    """The first-spike train ``(T, *x.shape)`` the input layer of ``net`` makes of intensities
    ``x``: a spike at ``k = encode(x)``, none when ``x`` never crosses the threshold. Fed to a
    network converted with ``input_mode="spikes"``, it gives exactly the analog result."""
    from .kernel import encode

    first = next((m for m in neurons_of(net) if m.layer_index == 0), None)
    if first is None:
        raise ValueError("the network has no input layer (a TTFS neuron with layer_index=0)")
    if first.relay:
        raise InputShapeError("this network takes the analog image (its input layer relays it, "
                              "input_mode='analog' of the surrogate): it has no input spike "
                              "train; feed the images")
    T = first.kernel.T
    if not isinstance(x, Tensor):
        raise InputShapeError(f"expected a torch.Tensor, got {type(x).__name__}")
    intensities = as_current(x, first.kernel.tau.dtype)
    check_intensities(intensities, first.check_range)  # as the analog input layer would
    with torch.no_grad():
        times = encode(intensities, first.kernel.thresholds())
    steps = torch.arange(T, device=x.device).view(T, *([1] * x.dim()))
    return (times.unsqueeze(0) == steps).to(x.dtype if x.is_floating_point() else torch.float32)
