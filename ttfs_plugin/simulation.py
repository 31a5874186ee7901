"""What a time-stepped simulation returns, and how the surrogate is compared with it.

Both adapters step their network ``(L+1)*T`` times and record, with forward hooks on their TTFS
neurons (any module with ``layer_index`` and ``kernel``), every neuron's spike time.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor, nn

from .errors import InputShapeError
from .metrics import EnergyReference, efficiency_figures
from .roles import eval_mode, spiking_layers


@dataclass
class SimulationResult:
    """Logits and per-layer spikes of one simulated batch.

    ``spike_times[name]``: local spike time ``k`` of every neuron (``T`` = no spike), shaped like
    the layer; ``spike_counts[name]``: spikes per sample.
    """

    logits: Tensor
    spike_times: dict[str, Tensor]
    T: int
    steps: int
    neurons: dict[str, int] = field(default_factory=dict)
    output_layer: str | None = None  # the spiking output layer's name (output="spikes")
    input_layer: str | None = None  # the spiking input layer's name (None: analog input)

    @property
    def first_spike_prediction(self) -> Tensor:
        """Class of the earliest output spike (ties: the lowest index; ``-1``: no output spike).
        Only for a network with a spiking output layer."""
        if self.output_layer is None:
            raise ValueError("this network ends in a membrane readout; convert it with "
                             "output='spikes' for a first-spike prediction")
        times = self.spike_times[self.output_layer].flatten(1)
        first, index = times.min(1)
        return torch.where(first < self.T, index, torch.full_like(index, -1))

    @property
    def spike_counts(self) -> dict[str, Tensor]:
        return {name: (t < self.T).flatten(1).sum(1) for name, t in self.spike_times.items()}

    def efficiency(self, reference: str | EnergyReference = "cifar10") -> dict:
        """The SPEC §9 figures of this batch (same definitions as ``metrics.evaluate``)."""
        layers = [{"name": name, "neurons": self.neurons[name],
                   "spikes_per_sample": counts.double().mean().item(),
                   "input": name == self.input_layer}
                  for name, counts in self.spike_counts.items()]
        return efficiency_figures(layers, self.T, reference, time_steps=self.steps)


def is_ttfs_neuron(module: nn.Module) -> bool:
    from .stepped import NeuronBase

    return isinstance(module, NeuronBase)


def run_simulation(net: nn.Module, x: Tensor, step: Callable, steps: int | None = None,
                   logits_of: Callable | None = None, chain: list | None = None
                   ) -> SimulationResult:
    """Step ``net`` through a whole run with ``out, state = step(x_t, state)`` (from
    ``state=None``) and record every neuron's spike time.

    The input layer's ``input_mode`` says what ``x`` is: analog, the batch (fed at step 0, zeros
    after); spikes, a first-spike train ``(steps_in <= T, B, ...)`` (zeros after it).
    ``logits_of(out, state)`` reads the logits (default: ``out``, or its second entry for a
    ``(spk, mem)`` output). ``chain`` (from :func:`ttfs_plugin.window_schedule.chain_of`, or
    ``None``): run it window by window where that gives the loop's results bit for bit
    (:mod:`ttfs_plugin.window_schedule`); the loop runs otherwise.
    """
    from .stepped import neurons_of, num_steps
    from .timestep import silent_zeros

    steps = num_steps(net) if steps is None else int(steps)
    first = next((m for m in neurons_of(net) if m.layer_index == 0), None)
    if first is None:
        raise ValueError("the network has no input layer (a TTFS neuron with layer_index=0)")
    if not isinstance(x, Tensor):
        raise InputShapeError(f"expected a torch.Tensor input, got {type(x).__name__}")
    if first.input_mode == "spikes":
        if x.dim() < 2 or x.shape[0] > first.kernel.T:
            raise InputShapeError(
                f"a network with input_mode='spikes' takes a spike train (steps, B, ...) of at "
                f"most T={first.kernel.T} steps, got shape {tuple(x.shape)}; make one with "
                "input_spike_train(x, net)")
        inputs, zeros = x, silent_zeros(x.shape[1:], x)
    else:
        inputs, zeros = x.unsqueeze(0), silent_zeros(x.shape, x)
    by_windows = None
    if chain is not None and first.input_mode == "analog":
        from .window_schedule import run

        by_windows = run(chain, x, steps)
    if by_windows is not None:
        logits, times, neurons, T = by_windows
    else:
        logits, times, neurons, T = _step_loop(net, inputs, zeros, step, steps, logits_of)
    output = next((m for m in neurons_of(net) if m.is_output), None)
    label = None
    if output is not None:
        label = output.layer_name or next(n for n, m in net.named_modules() if m is output)
    input_label = None
    if not first.relay:
        input_label = first.layer_name or next(n for n, m in net.named_modules() if m is first)
    return SimulationResult(logits, times, T, steps, neurons, label, input_label)


def _step_loop(net: nn.Module, inputs: Tensor, zeros: Tensor, step: Callable, steps: int,
               logits_of: Callable | None) -> tuple[Tensor, dict[str, Tensor], dict[str, int], int]:
    """The framework's own loop, ``steps`` calls of ``step``, with the spike-time recorder:
    ``(logits, spike times, neurons per sample, T)``."""
    recorder = SpikeTimeRecorder(net)
    out, state = None, None
    try:
        for g in range(steps):
            recorder.step = g
            out, state = step(inputs[g] if g < inputs.shape[0] else zeros, state)
    finally:
        recorder.close()
    if logits_of is not None:
        logits = logits_of(out, state)
    else:
        logits = out[1] if isinstance(out, tuple) else out
    assert recorder.T is not None  # it hooks every spiking neuron
    return logits, recorder.times, recorder.neurons, recorder.T


class SpikeTimeRecorder:
    """Forward hooks that turn the spikes of every TTFS neuron into first-spike times.

    The simulation loop sets ``recorder.step`` to the global step before each call. Spikes of
    the fast path carry their window's spike times (:func:`ttfs_plugin.timestep.spike_times_of`):
    those are read once per window, at :meth:`close`, instead of scanning every step's spikes
    (the same times: a spike at ``k`` is ``times == k``); other spikes are scanned per step.
    """

    def __init__(self, net: nn.Module) -> None:
        self.step = 0
        self.times: dict[str, Tensor] = {}
        self.neurons: dict[str, int] = {}
        self.T: int | None = None  # the window of the neurons' kernels
        self._pending: dict[str, list] = {}  # label: [times, first k, last k, T], a fast window
        self._scanned: set[str] = set()  # labels with spikes recorded step by step
        self._handles = []
        for name, module in net.named_modules():
            if is_ttfs_neuron(module) and not getattr(module, "relay", False):  # relay: no spikes
                label = getattr(module, "layer_name", None) or name
                self._handles.append(module.register_forward_hook(self._hook(label)))
                self.T = module.kernel.T

    def _hook(self, label: str):
        from .timestep import spike_times_of

        def hook(module, inputs, output):
            spikes = output[0] if isinstance(output, tuple) else output
            T, index = module.kernel.T, module.layer_index
            if label not in self.times:
                self.times[label] = torch.full(spikes.shape, T, dtype=torch.long,
                                               device=spikes.device)
                self.neurons[label] = spikes[0].numel()
            window, k = divmod(self.step, T)
            if window != index + 1:
                return
            tag = spike_times_of(spikes)
            pending = self._pending.get(label)
            if tag is not None and pending is not None and pending[0] is tag.times:
                pending[2] = k  # the same window's times: nothing to read yet
                return
            self._settle(label)
            if tag is not None:
                self._pending[label] = [tag.times, k, k, tag.T]
            else:
                self.times[label].masked_fill_(spikes.detach() > 0, k)
                self._scanned.add(label)
        return hook

    def _settle(self, label: str) -> None:
        """Write the spikes a fast window's times gave at the steps seen (``first … last``)."""
        pending = self._pending.pop(label, None)
        if pending is None:
            return
        times, first, last, T = pending
        if first == 0 and last == T - 1 and label not in self._scanned:
            self.times[label] = times.long()  # the whole window, nothing else recorded: as is
            return
        seen = times <= last if first == 0 else (times >= first) & (times <= last)
        self.times[label] = torch.where(seen, times.long(), self.times[label])
        self._scanned.add(label)

    def close(self) -> None:
        for label in list(self._pending):
            self._settle(label)
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


@torch.no_grad()
def surrogate_spike_times(network: nn.Module, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """Eval-mode logits of the surrogate and the spike time ``t(z)`` of each spiking layer."""
    times: dict[str, Tensor] = {}
    handles = []
    for name, module in spiking_layers(network):
        def hook(mod, inputs, output, name=name):
            times[name] = mod.spike_times(inputs[0])
        handles.append(module.register_forward_hook(hook))
    try:
        with eval_mode(network):
            logits = network(x)
    finally:
        for handle in handles:
            handle.remove()
    return logits, times


def agreement(result: SimulationResult, logits: Tensor, times: dict[str, Tensor]) -> dict:
    """Fraction of samples with the same prediction and of neurons with the same spike time."""
    same: float = 0
    total = 0
    for name, t in times.items():
        sim = result.spike_times[name].reshape(t.shape)
        same += (sim == t).sum().item()
        total += t.numel()
    return {
        "agreement_with_surrogate": (result.logits.argmax(1) == logits.argmax(1))
        .double().mean().item(),
        "spike_time_agreement": same / total if total else 1.0,
    }


BACKENDS = ("snntorch", "norse")


def load_adapter(backend: str):
    """The adapter module of ``backend`` (``snntorch``, ``norse`` or ``nir``), with a clear error
    when its framework is not installed."""
    from .errors import ConfigError, unknown_name

    if backend not in BACKENDS + ("nir",):
        raise unknown_name("backend", backend, BACKENDS + ("surrogate", "nir"))
    try:
        return importlib.import_module(f"ttfs_plugin.{backend}")
    except ImportError:
        raise ConfigError(f"backend {backend!r} needs its framework: "
                          f"pip install 'ttfs-plugin[{backend}]'") from None


def evaluate_backend(model: nn.Module, loader, backend: str,
                     reference: str | EnergyReference = "cifar10", costs=None) -> dict:
    """Accuracy and efficiency figures of ``model`` exported to ``backend`` and simulated
    step by step, plus its agreement with the surrogate (predictions and spike times)."""
    adapter = load_adapter(backend)
    net = getattr(adapter, f"to_{backend}")(model)
    return evaluate_simulated(net, loader, backend, reference, surrogate=model, costs=costs)


@torch.no_grad()
def evaluate_simulated(net: nn.Module, loader, backend: str,
                       reference: str | EnergyReference = "cifar10",
                       surrogate: nn.Module | None = None, costs=None) -> dict:
    """Accuracy and efficiency figures of an exported ``net`` of ``backend`` (from ``to_*``,
    ``load`` or ``ttfs_plugin.nir.from_nir``), simulated step by step, with its synaptic
    operations, the ReLU twin's MACs and their energy at ``costs`` (:mod:`.synops`); with
    ``surrogate``, also its agreement with that model (predictions and spike times)."""
    from .export import stages_of
    from .synops import analog_input_macs, layer_synops, operation_figures, relu_twin_macs

    if backend not in BACKENDS:
        from .errors import unknown_name

        raise unknown_name("simulation backend", backend, BACKENDS)
    adapter = load_adapter(backend)
    dtype = next(net.parameters()).dtype
    correct = samples = same_prediction = same_times = neurons_seen = 0
    spikes: dict[str, float] = {}
    neurons: dict[str, int] = {}
    stages = stages_of(net)
    count = layer_synops(stages)
    ops: dict[str, float] = {}
    in_shape: tuple[int, ...] = ()
    T = steps = input_layer = None
    for x, y in loader:
        x = x.to(dtype)
        in_shape = tuple(x.shape[1:])
        result = adapter.simulate(net, x)
        T, steps, input_layer = result.T, result.steps, result.input_layer
        for name, times in result.spike_times.items():
            ops[name] = ops.get(name, 0.0) + count(name, times < T).sum().item()
        correct += (result.logits.argmax(1) == y).sum().item()
        samples += y.numel()
        if surrogate is not None:
            logits, times = surrogate_spike_times(surrogate, x)
            same_prediction += (result.logits.argmax(1) == logits.argmax(1)).sum().item()
            for name, t in times.items():
                same_times += (result.spike_times[name].reshape(t.shape) == t).sum().item()
                neurons_seen += t.numel()
        for name, counts in result.spike_counts.items():
            spikes[name] = spikes.get(name, 0.0) + counts.sum().item()
            neurons[name] = result.neurons[name]
    if samples == 0 or T is None:  # T is None only when there was no batch at all
        from .errors import ConfigError

        raise ConfigError("the evaluation split holds no samples")
    layers = [{"name": n, "neurons": neurons[n], "spikes_per_sample": s / samples,
               "input": n == input_layer} for n, s in spikes.items()]
    macs = relu_twin_macs(stages, in_shape)
    figures = {"accuracy": correct / samples, "samples": samples, "backend": backend,
               **efficiency_figures(layers, T, reference, time_steps=steps),
               **operation_figures({n: v / samples for n, v in ops.items()}, macs, input_layer,
                                   costs, analog_input_macs(stages, macs))}
    if surrogate is not None:
        figures.update(agreement_with_surrogate=same_prediction / samples,
                       spike_time_agreement=same_times / neurons_seen)
    return figures
