"""Figures of a TTFS network: spike rasters, kernels, pre-activations, training curves, and the
paper's figures of kernel errors and parameters (Figs. 2, 5, 7, 10–15).

Needs the ``plot`` extra (``pip install 'ttfs-plugin[plot]'``, i.e. matplotlib); it is imported
only when a figure is drawn, so :func:`kernel_snapshot` (for a training callback) works without
it. Every plotting function takes plain data, returns the matplotlib ``Figure`` and accepts

* ``ax`` (one-panel figures) or ``axes`` (several panels): draw into existing axes, e.g. from
  ``plt.subplots()`` for an interactive window; otherwise a new ``Figure`` is made with the
  non-interactive Agg canvas (no pyplot state, nothing to close);
* ``path``: also save the figure there (format from the suffix: ``.png``, ``.pdf``, ``.svg`` …).

>>> from ttfs_plugin import plot
>>> logits, times = surrogate_spike_times(net, images)
>>> plot.spike_raster(times, T=net.config.T, path="raster.png")
>>> plot.preactivation_histograms(net, images, path="fig7.png")      # the paper's Fig. 7
>>> snapshots = [plot.kernel_snapshot(net)]                           # the paper's Fig. 5:
>>> fit(net, ..., on_epoch=lambda record: snapshots.append(plot.kernel_snapshot(net)))
>>> plot.kernel_parameters(snapshots, path="kernels_over_training.png")
>>> history = fit(net, ...)          # each record holds "kernels" and "kernel_errors"
>>> plot.kernel_error_overview(history, path="fig2.png")              # Fig. 2
>>> plot.kernel_error_history(history, "max", path="fig11.png")       # Figs. 11–13
>>> plot.kernel_error_curves(net, path="fig10.png")                   # Fig. 10: e(z)
>>> plot.batchnorm_distributions(net, path="fig15.png")               # Figs. 14–15

Time axis of a raster (SPEC §8): spiking layer ``l`` (the input encoder is ``l = 0``) fires
during window ``l + 1``, so local spike time ``k`` is global step ``(l + 1) * T + k``.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn

from .errors import ConfigError
from .kernel import (
    DEFAULT_QUANTIZER,
    check_window,
    encode,
    kernel_table,
    spike_regions,
    threshold_table,
)
from .layers import TemporalKernel
from .roles import SpikingLayer

__all__ = ["spike_raster", "raster_events", "kernel_curves", "kernel_snapshot",
           "kernel_parameters", "collect_preactivations", "preactivation_stats",
           "preactivation_histograms", "load_history", "training_curves", "spikes_per_layer",
           "kernel_error_overview", "kernel_error_history", "kernel_error_curves",
           "kernel_parameter_distributions", "batchnorm_distributions", "feeding_norms",
           "save_figure"]

INSTALL_HINT = "pip install 'ttfs-plugin[plot]'"
#: Colours of the two firing bounds and of the batch norm's mean ``beta`` (the paper's Fig. 7).
FLOOR_COLOUR, CEILING_COLOUR, BETA_COLOUR = "tab:red", "tab:purple", "black"
#: Batch norms whose ``beta`` Fig. 7 marks and Fig. 15 shows.
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
#: Modules after which a batch norm no longer feeds the next neuron directly.
WEIGHT_OPS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


# --------------------------------------------------------------------------- matplotlib plumbing

def _matplotlib():
    try:
        import matplotlib
    except ImportError:
        raise ImportError(f"ttfs_plugin.plot needs matplotlib: {INSTALL_HINT}") from None
    return matplotlib


def _new_figure(nrows: int = 1, ncols: int = 1, figsize=None, **subplot_kw):
    """A ``Figure`` on the Agg canvas (not registered with pyplot) and its axes array."""
    _matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, **subplot_kw)
    return fig, axes


def _figure_for(ax, figsize=None):
    """``(figure, ax)``: the given axes' figure, or a new one-panel figure."""
    if ax is not None:
        return ax.figure, ax
    fig, axes = _new_figure(figsize=figsize)
    return fig, axes[0, 0]


def _grid_of_panels(axes, n: int, ncols: int):
    """``(figure, [ax] * n)``: the given axes, or a new grid of ``n`` panels, ``ncols`` wide
    (unused cells hidden)."""
    if axes is not None:
        return _figure_for_panels(axes, n)
    cols = max(1, min(ncols, n))
    rows = math.ceil(n / cols)
    fig, grid = _new_figure(rows, cols, figsize=(3.4 * cols, 2.9 * rows))
    panels = list(grid.flat)
    for extra in panels[n:]:
        extra.set_visible(False)
    return fig, panels[:n]


def _figure_for_panels(axes, n: int, figsize=None, sharex: bool = False,
                       side_by_side: bool = False):
    """``(figure, [ax] * n)``: the given axes, or a new figure of ``n`` panels (stacked, or
    side by side)."""
    if axes is not None:
        flat = list(axes.flat) if hasattr(axes, "flat") else list(axes)
        if len(flat) < n:
            raise ConfigError(f"this figure needs {n} axes, got {len(flat)}")
        return flat[0].figure, flat[:n]
    shape = (1, n) if side_by_side else (n, 1)
    fig, grid = _new_figure(*shape, figsize=figsize, sharex=sharex)
    return fig, list(grid.flat)


def save_figure(fig, path: str | Path, dpi: int = 120) -> Path:
    """Write ``fig`` to ``path`` (parent folders created); the format follows the suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


def _finish(fig, path):
    if path is not None:
        save_figure(fig, path)
    return fig


def _layer_colour(index: int) -> str:
    return f"C{index % 10}"


def _integer_epochs(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _legend(ax, n_entries: int) -> None:
    if n_entries:
        ax.legend(fontsize="x-small", ncol=1 + (n_entries - 1) // 8, frameon=False)


# --------------------------------------------------------------------------- 1. spike raster

def raster_events(spike_times: Mapping[str, Tensor], T: int, sample: int = 0,
                  max_neurons_per_layer: int | None = 100, select: str = "spread",
                  first_layer: int = 0) -> dict:
    """The points of :func:`spike_raster`, as plain data.

    Layer ``l`` (dict order from ``first_layer``: 0 = the input encoder; 1 for an analog-input
    network, whose input layer emits no spikes but keeps window 0) fires in window ``l + 1``: a
    spike at local time ``k`` is drawn at global step ``(l + 1) * T + k``. Each layer keeps at most
    ``max_neurons_per_layer`` neurons (``None``: all), chosen by ``select``: ``"spread"``
    (evenly spaced over the layer, representative), ``"first"`` (the first ones) or
    ``"firing"`` (neurons that spike first, then silent ones, in index order).

    Returns ``{"layers": [{"name", "index", "neurons", "shown", "spikes", "offset"}],
    "steps": [...], "rows": [...], "layer": [...], "total_steps": (L + 1) * T}``; ``spikes`` is
    the layer's spike count for this sample over all its neurons, ``rows`` are y positions
    (layer ``l`` occupies ``offset … offset + shown - 1``).
    """
    T = check_window(T)
    if select not in ("spread", "first", "firing"):
        raise ConfigError(f"unknown neuron selection {select!r}; choose spread, first or firing")
    if max_neurons_per_layer is not None and max_neurons_per_layer < 1:
        raise ConfigError(f"max_neurons_per_layer must be >= 1 or None, got "
                          f"{max_neurons_per_layer!r}")
    if not spike_times:
        raise ConfigError("no spike times to plot (is this a ReLU network?)")
    layers, steps, rows, owner = [], [], [], []
    offset = 0
    if isinstance(first_layer, bool) or not isinstance(first_layer, int) or first_layer < 0:
        raise ConfigError(f"first_layer must be an integer >= 0, got {first_layer!r}")
    for index, (name, times) in enumerate(spike_times.items(), start=first_layer):
        times = torch.as_tensor(times)
        if times.dim() < 1 or not -times.shape[0] <= sample < times.shape[0]:
            raise ConfigError(f"sample {sample} is out of range: layer {name!r} holds "
                              f"{times.shape[0] if times.dim() else 0} samples")
        t = times[sample].detach().reshape(-1).long().cpu()
        fired = t < T
        n = t.numel()
        shown = n if max_neurons_per_layer is None else min(n, max_neurons_per_layer)
        if shown == n:
            keep = torch.arange(n)
        elif select == "first":
            keep = torch.arange(shown)
        elif select == "spread":
            keep = torch.linspace(0, n - 1, shown).round().long().unique()
        else:  # firing neurons first (stable: index order within each group)
            keep = torch.argsort((~fired).to(torch.int8), stable=True)[:shown].sort().values
        shown = keep.numel()
        sub = t[keep]
        rows_here = torch.nonzero(sub < T).flatten()
        steps += ((index + 1) * T + sub[rows_here]).tolist()
        rows += (offset + rows_here).tolist()
        owner += [index] * rows_here.numel()
        layers.append({"name": name, "index": index, "neurons": n, "shown": shown,
                       "spikes": int(fired.sum()), "offset": offset})
        offset += shown
    return {"layers": layers, "steps": steps, "rows": rows, "layer": owner,
            "total_steps": (first_layer + len(layers) + 1) * T}


def spike_raster(spike_times, T: int | None = None, sample: int = 0,
                 max_neurons_per_layer: int | None = 100, select: str = "spread", *,
                 first_layer: int = 0, title: str | None = None, ax=None,
                 path: str | Path | None = None):
    """Raster of one sample's first spikes across all spiking layers, over global time.

    ``spike_times``: ``{layer name: (N, …) spike times}`` with ``T`` meaning no spike, in layer
    order (input encoder first) — ``SimulationResult.spike_times`` or the second value of
    :func:`ttfs_plugin.simulation.surrogate_spike_times` — or a ``SimulationResult`` itself
    (then ``T`` defaults to its own). Neurons are stacked on the y axis by layer; dotted
    vertical lines mark the window boundaries ``w * T``. See :func:`raster_events` for the
    neuron selection and ``first_layer`` (1 for an analog-input network).
    """
    if hasattr(spike_times, "spike_times") and hasattr(spike_times, "T"):  # SimulationResult
        T = spike_times.T if T is None else T
        spike_times = spike_times.spike_times
    if T is None:
        raise ConfigError("spike_raster needs the window length T (e.g. network.config.T)")
    events = raster_events(spike_times, T, sample, max_neurons_per_layer, select, first_layer)
    layers = events["layers"]
    fig, ax = _figure_for(ax, figsize=(9, 1.5 + 0.45 * len(layers)))
    colours = [_layer_colour(i) for i in events["layer"]]
    total_rows = layers[-1]["offset"] + layers[-1]["shown"]
    marker_size = max(4.0, min(40.0, 1500.0 / max(total_rows, 1)))
    ax.scatter(events["steps"], events["rows"], c=colours, marker="|", s=marker_size,
               linewidths=1.0)
    for window in range(events["total_steps"] // T + 1):
        ax.axvline(window * T, color="0.6", lw=0.6, ls=":", zorder=0)
    ticks, labels = [], []
    for layer in layers:
        if layer["offset"]:
            ax.axhline(layer["offset"] - 0.5, color="0.85", lw=0.6, zorder=0)
        ticks.append(layer["offset"] + (layer["shown"] - 1) / 2)
        shown = "" if layer["shown"] == layer["neurons"] else f" ({layer['shown']} shown)"
        labels.append(f"{layer['name']}\n{layer['spikes']} spikes / {layer['neurons']} "
                      f"neurons{shown}")
    ax.set_yticks(ticks, labels, fontsize="x-small")
    for tick, layer in zip(ax.get_yticklabels(), layers):
        tick.set_color(_layer_colour(layer["index"]))
    ax.set_ylim(-0.5, total_rows - 0.5)
    ax.set_xlim(0, events["total_steps"])
    ax.set_xlabel(f"global time step (window = {T} steps; layer l fires in window l+1)")
    total = sum(layer["spikes"] for layer in layers)
    ax.set_title(title or f"first spikes of sample {sample}: {total} spikes in "
                 f"{events['total_steps']} steps")
    return _finish(fig, path)


# --------------------------------------------------------------------------- 2. kernels

def _kernel_modules(network: nn.Module) -> dict[str, TemporalKernel]:
    """``{layer name: TemporalKernel}`` of every kernel inside ``network`` (shared ones once)."""
    found: dict[str, TemporalKernel] = {}
    seen: set[int] = set()
    for name, module in network.named_modules():
        if isinstance(module, TemporalKernel) and id(module) not in seen:
            seen.add(id(module))
            label = name[: -len(".kernel")] if name.endswith(".kernel") else name
            found[label or "kernel"] = module
    return found


def kernel_snapshot(network: nn.Module) -> dict[str, tuple[float, float]]:
    """``{layer name: (tau, td)}`` of every temporal kernel of ``network``, as floats.

    ``tau`` is the effective one (clamped at ``TAU_MIN``, what the tables use). Cheap and free
    of matplotlib: record one per epoch from a training callback and plot the list with
    :func:`kernel_parameters` (the paper's Fig. 5).
    """
    return {name: (float(k.effective_tau().detach()), float(k.td.detach()))
            for name, k in _kernel_modules(network).items()}


def _kernel_values(source, T, theta0, quantizer: str = DEFAULT_QUANTIZER
                   ) -> dict[str, tuple[float, float, int, float, str]]:
    """``{name: (tau, td, T, theta0, quantizer)}`` from a network, a kernel dict or a snapshot
    (``quantizer`` applies to a snapshot; kernels carry their own)."""
    if isinstance(source, TemporalKernel):
        source = {"kernel": source}
    elif isinstance(source, nn.Module):
        source = _kernel_modules(source)
        if not source:
            raise ConfigError("the network has no temporal kernels (is it a ReLU network?)")
    if not isinstance(source, Mapping) or not source:
        raise ConfigError("kernel_curves takes a network, a {name: TemporalKernel} dict or a "
                          "{name: (tau, td)} snapshot")
    values = {}
    for name, item in source.items():
        if isinstance(item, TemporalKernel):
            values[name] = (float(item.effective_tau().detach()), float(item.td.detach()),
                            item.T if T is None else check_window(T),
                            item.theta0 if theta0 is None else float(theta0), item.quantizer)
            continue
        tau, td = _tau_td(item, name)
        if T is None:
            raise ConfigError("plotting kernels from (tau, td) values needs the window T, "
                              "e.g. kernel_curves(snapshot, T=32)")
        values[name] = (tau, td, check_window(T), 1.0 if theta0 is None else float(theta0),
                        quantizer)
    return values


def _tau_td(item, name: str) -> tuple[float, float]:
    if isinstance(item, Mapping) and "tau" in item and "td" in item:
        return float(item["tau"]), float(item["td"])
    try:
        tau, td = item
        return float(tau), float(td)
    except (TypeError, ValueError):
        raise ConfigError(f"kernel {name!r}: expected (tau, td) or {{'tau', 'td'}}, got "
                          f"{item!r}") from None


def kernel_curves(network_or_kernels, T: int | None = None, theta0: float | None = None, *,
                  quantizer: str = DEFAULT_QUANTIZER, log_thresholds: bool = True, axes=None,
                  path: str | Path | None = None):
    """Per spiking layer: ``kappa(t)`` for ``t = 0 … T-1`` (left) and the threshold table
    ``theta0 * kappa(k)`` as steps (right, log scale by default: the levels of the
    log-quantiser), with ``x_max = kappa(0)`` (circle) and ``x_min = kappa(T-1)`` (triangle)
    marked.

    ``network_or_kernels``: a network (every :class:`TemporalKernel` inside it), one kernel, a
    ``{name: TemporalKernel}`` dict, or a ``{name: (tau, td)}`` snapshot (then ``T`` is needed;
    ``theta0`` defaults to 1, ``quantizer`` says its table). ``T`` / ``theta0`` given with
    kernels override theirs; kernels always use their own quantizer's table.
    """
    values = _kernel_values(network_or_kernels, T, theta0, quantizer)
    fig, (ax_k, ax_t) = _figure_for_panels(axes, 2, figsize=(11, 4.2), side_by_side=True)
    for index, (name, (tau, td, T_l, theta0_l, quantizer_l)) in enumerate(values.items()):
        colour = _layer_colour(index)
        kappa = kernel_table(tau, td, T_l).double().numpy()
        thr = threshold_table(tau, td, T_l, theta0_l, quantizer_l).double().numpy()
        steps = range(T_l)
        ax_k.plot(steps, kappa, color=colour, lw=1.2, marker=".", ms=3,
                  label=f"{name}: τ={tau:.3g}, td={td:.3g} "
                        f"(x_max={kappa[0]:.3g}, x_min={kappa[-1]:.3g})")
        ax_k.plot([0], [kappa[0]], "o", color=colour, ms=6, mfc="none")
        ax_k.plot([T_l - 1], [kappa[-1]], "v", color=colour, ms=6, mfc="none")
        ax_t.step(list(steps) + [T_l], list(thr) + [thr[-1]], where="post", color=colour,
                  lw=1.2, label=f"{name}: θ0={theta0_l:g}")
        ax_t.plot([0], [thr[0]], "o", color=colour, ms=6, mfc="none")
        ax_t.plot([T_l - 1], [thr[-1]], "v", color=colour, ms=6, mfc="none")
    ax_k.set_xlabel("local time t (steps)")
    ax_k.set_ylabel("κ(t) = exp(-(t - td)/τ)")
    ax_k.set_title("temporal kernels (○ x_max = κ(0), ▽ x_min = κ(T-1))")
    ax_t.set_xlabel("local time step k")
    ax_t.set_ylabel("threshold θ0·κ(k)")
    ax_t.set_title("threshold tables (a spike at k needs u ≥ θ0·κ(k))")
    if log_thresholds:
        ax_t.set_yscale("log")
    _legend(ax_k, len(values))
    _legend(ax_t, len(values))
    return _finish(fig, path)


def _snapshots(history) -> tuple[list, list[dict]]:
    """``(epochs, [{name: (tau, td)}])`` from snapshots, history records or a run folder."""
    if isinstance(history, (str, Path)):
        history = load_history(history)
    if isinstance(history, Mapping):
        history = history.get("history", [history])
    history = list(history)
    epochs, snaps = [], []
    for i, record in enumerate(history):
        if not isinstance(record, Mapping):
            raise ConfigError(f"kernel history entry {i} is a {type(record).__name__}, not a "
                              "{layer: (tau, td)} dict")
        if "kernels" in record:
            snaps.append(record["kernels"])
            epochs.append(record.get("epoch", i))
        elif "epoch" in record or "train_loss" in record:
            continue  # a training record without kernel values
        else:
            snaps.append(record)
            epochs.append(i)
    if not snaps:
        raise ConfigError("no kernel values to plot: pass a list of kernel_snapshot(network) "
                          "dicts, one per epoch, or history records with a 'kernels' entry")
    return epochs, snaps


def kernel_parameters(history_of_kernels, epochs: Sequence | None = None, *, axes=None,
                      path: str | Path | None = None):
    """``tau`` and ``td`` of every layer over training (the paper's Fig. 5).

    ``history_of_kernels``: a list of ``{layer name: (tau, td)}`` (one :func:`kernel_snapshot`
    per epoch; record one before training too so that index = epochs done), or history records
    holding such a dict under ``"kernels"`` (their ``"epoch"`` is the x value), or a run folder
    / ``metrics.json`` whose history has them. ``epochs`` overrides the x values.
    """
    xs, snaps = _snapshots(history_of_kernels)
    if epochs is not None:
        xs = list(epochs)
        if len(xs) != len(snaps):
            raise ConfigError(f"{len(xs)} epochs for {len(snaps)} kernel snapshots")
    names: list[str] = []
    for snap in snaps:
        names += [n for n in snap if n not in names]
    fig, (ax_tau, ax_td) = _figure_for_panels(axes, 2, figsize=(8, 6), sharex=True)
    for index, name in enumerate(names):
        pairs = [_tau_td(s[name], name) if name in s else (math.nan, math.nan) for s in snaps]
        colour = _layer_colour(index)
        marker = "." if len(xs) <= 50 else None
        ax_tau.plot(xs, [p[0] for p in pairs], color=colour, marker=marker, label=name)
        ax_td.plot(xs, [p[1] for p in pairs], color=colour, marker=marker, label=name)
    ax_tau.set_ylabel("τ (time constant)")
    ax_td.set_ylabel("td (time delay)")
    ax_td.set_xlabel("epoch")
    _integer_epochs(ax_td)
    ax_tau.set_title("temporal-kernel parameters over training")
    _legend(ax_tau, len(names))
    return _finish(fig, path)


# --------------------------------------------------------------------------- 3. pre-activations

def _is_neuron(module: nn.Module) -> bool:
    return isinstance(module, SpikingLayer)


@torch.no_grad()
def collect_preactivations(network: nn.Module, x: Tensor) -> dict[str, tuple[Tensor, nn.Module]]:
    """``{layer name: (z, neuron)}``: the inputs ``z`` of every TTFS neuron (modules with
    ``spike_times`` and ``kernel``) for batch ``x``, in eval mode, collected with forward hooks
    (detached, on the CPU, float32)."""
    found: dict[str, tuple[Tensor, nn.Module]] = {}
    handles = []
    for name, module in network.named_modules():
        if _is_neuron(module):
            def hook(mod, inputs, output, name=name):
                found[name] = (inputs[0].detach().float().cpu(), mod)
            handles.append(module.register_forward_hook(hook))
    if not handles:
        raise ConfigError("the network has no TTFS neurons to plot (is it a ReLU network?)")
    was_training = network.training
    network.eval()
    try:
        network(x)
    finally:
        network.train(was_training)
        for handle in handles:
            handle.remove()
    return found


def feeding_norms(network: nn.Module) -> dict[str, tuple[str, nn.Module]]:
    """``{neuron name: (norm name, batch norm)}``: the batch norm that feeds each TTFS neuron —
    the last one before it with no weight op in between, or the neuron's own ``norm`` (the
    snnTorch and Norse adapters); neurons without one are left out."""
    found: dict[str, tuple[str, nn.Module]] = {}
    pending: tuple[str, nn.Module] | None = None
    for name, module in network.named_modules():
        own = getattr(module, "norm", None)
        if _is_neuron(module) and isinstance(own, BATCH_NORMS):
            found[name] = (f"{name}.norm", own)
            pending = None
        elif _is_neuron(module):
            if pending is not None:
                found[name] = pending
            pending = None
        elif isinstance(module, BATCH_NORMS):
            pending = (name, module)
        elif isinstance(module, WEIGHT_OPS):
            pending = None
    return found


def _mean_beta(norm: nn.Module) -> float | None:
    bias = getattr(norm, "bias", None)
    return float(bias.detach().float().mean()) if isinstance(bias, Tensor) else None


def preactivation_stats(network: nn.Module, x: Tensor) -> dict[str, dict]:
    """Per TTFS layer: its pre-activations ``z`` (flat), the firing bounds ``floor`` =
    ``theta0 * x_min`` and ``ceiling`` = ``theta0 * x_max``, and the fractions of neurons
    ``pruned`` (no spike), ``quantized`` (``1 ≤ t ≤ T-1``) and ``clipped`` (``t = 0``) — the
    spike times come from :func:`~ttfs_plugin.kernel.encode` on the layer's own table — and
    ``beta``: the mean ``beta`` over the channels of the batch norm that feeds the layer
    (:func:`feeding_norms`; ``None`` without one), the centre the paper's Fig. 7 marks."""
    norms = feeding_norms(network)
    stats = {}
    for name, (z, neuron) in collect_preactivations(network, x).items():
        thr = cast(SpikingLayer, neuron).kernel.thresholds().detach().float().cpu()
        t = encode(z, thr)
        total = max(t.numel(), 1)
        fractions = {region: mask.sum().item() / total
                     for region, mask in spike_regions(t, thr.numel()).items()}
        norm = norms.get(name)
        stats[name] = {"z": z.reshape(-1), "floor": thr[-1].item(), "ceiling": thr[0].item(),
                       "T": thr.numel(), **fractions,
                       "beta": _mean_beta(norm[1]) if norm is not None else None}
    return stats


def _histogram_range(z: Tensor, floor: float, ceiling: float,
                     beta: float | None = None) -> tuple[float, float]:
    """Central 99.8 % of ``z``, widened to show both bounds, 0 and ``beta``."""
    sample = z if z.numel() <= 1_000_000 else z[torch.randint(z.numel(), (1_000_000,))]
    finite = sample[torch.isfinite(sample)]
    marks = [0.0, floor, 1.1 * ceiling] + ([beta] if beta is not None else [])
    if finite.numel() == 0:
        return min(marks), max(marks)
    lo, hi = torch.quantile(finite.double(), torch.tensor([0.001, 0.999], dtype=torch.double))
    lo, hi = min(lo.item(), *marks), max(hi.item(), *marks)
    return (lo, hi) if hi > lo else (lo - 1.0, hi + 1.0)


def preactivation_histograms(network: nn.Module, x: Tensor, bins: int = 100, *,
                             log: bool = True, ncols: int = 4, axes=None,
                             path: str | Path | None = None):
    """The paper's Fig. 7: per spiking layer, the histogram of its pre-activations ``z`` with
    the mean ``beta`` of the batch norm that feeds it (black, where there is one),
    ``theta0 * x_min`` (red: below it a neuron is pruned) and ``theta0 * x_max`` (purple: above
    it the spike is clipped to ``t = 0``); the title gives the pruned / quantized / clipped
    fractions. Counts are on a log axis unless ``log=False``; the x range is the central
    99.8 % of ``z`` (the fractions count every value).
    """
    stats = preactivation_stats(network, x)
    n = len(stats)
    fig, panels = _grid_of_panels(axes, n, ncols)
    for ax, (name, s) in zip(panels, stats.items()):
        z = s["z"]
        lo, hi = _histogram_range(z, s["floor"], s["ceiling"], s["beta"])
        counts = torch.histc(z.double(), bins=bins, min=lo, max=hi).numpy()
        edges = torch.linspace(lo, hi, bins + 1).numpy()
        ax.stairs(counts, edges, fill=True, color="0.45", alpha=0.8)
        if s["beta"] is not None:
            ax.axvline(s["beta"], color=BETA_COLOUR, lw=1.2, label=f"mean β = {s['beta']:.3g}")
        ax.axvline(s["floor"], color=FLOOR_COLOUR, lw=1.2,
                   label=f"θ0·x_min = {s['floor']:.3g}")
        ax.axvline(s["ceiling"], color=CEILING_COLOUR, lw=1.2,
                   label=f"θ0·x_max = {s['ceiling']:.3g}")
        if log:
            ax.set_yscale("log")
            ax.set_ylim(bottom=0.5)
        ax.set_title(f"{name}\npruned {100 * s['pruned']:.1f}% · quantized "
                     f"{100 * s['quantized']:.1f}% · clipped {100 * s['clipped']:.1f}%",
                     fontsize="small")
        ax.set_xlabel("pre-activation z", fontsize="small")
        ax.tick_params(labelsize="x-small")
        ax.legend(fontsize="xx-small", frameon=False)
    panels[0].set_ylabel("count")
    return _finish(fig, path)


# --------------------------------------------------------------------------- 4. training curves

def _parse_cell(value: str):
    if value == "":
        return None
    if value in ("True", "False"):
        return value == "True"
    try:
        return float(value)
    except ValueError:
        return value


def load_history(source: str | Path) -> list[dict]:
    """Per-epoch records from a run folder (``metrics.json``, else ``metrics.csv``, else
    ``checkpoint.pt``), or from one of those files."""
    path = Path(source)
    if path.is_dir():
        for name in ("metrics.json", "metrics.csv", "checkpoint.pt"):
            if (path / name).is_file():
                return load_history(path / name)
        raise ConfigError(f"{path} holds no metrics.json, metrics.csv or checkpoint.pt; pass a "
                          "run folder written by 'ttfs train --out DIR'")
    if not path.is_file():
        raise ConfigError(f"{path} does not exist; pass a run folder, metrics.json, "
                          "metrics.csv or checkpoint.pt")
    if path.suffix == ".csv":
        with open(path, newline="") as fh:
            return [{k: _parse_cell(v) for k, v in row.items() if k is not None}
                    for row in csv.DictReader(fh)]
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path} is not valid JSON ({exc})") from None
        history = data.get("history") if isinstance(data, dict) else data
        if not isinstance(history, list):
            raise ConfigError(f"{path} holds no 'history' list of per-epoch records")
        return history
    from .checkpoint import read_checkpoint

    return list(read_checkpoint(path).history)


def _series(history: list[dict], key: str, scale: float = 1.0):
    xs, ys = [], []
    for i, record in enumerate(history):
        value = record.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            continue
        epoch = record.get("epoch")
        xs.append(epoch if isinstance(epoch, (int, float)) else i + 1)
        ys.append(value * scale)
    return xs, ys


def training_curves(history, *, axes=None, path: str | Path | None = None, title: str = ""):
    """Loss, accuracy (train / val) and spikes per sample over epochs.

    ``history``: the per-epoch records (``checkpoint["history"]``, ``metrics.json``'s
    ``history``), or a run folder / ``metrics.json`` / ``metrics.csv`` / ``checkpoint.pt``.
    Missing keys are skipped: a ReLU run (no spikes) gets no spike panel.
    """
    if isinstance(history, (str, Path)):
        history = load_history(history)
    elif isinstance(history, Mapping):
        history = history.get("history", [])
    history = [r for r in history if isinstance(r, Mapping)]
    if not history:
        raise ConfigError("the training history is empty: nothing to plot")
    panels = []
    loss = [(k, lbl) for k, lbl in (("train_loss", "train"), ("val_loss", "val"))
            if _series(history, k)[0]]
    if loss:
        panels.append(("loss", loss, 1.0))
    accuracy = [(k, lbl) for k, lbl in (("train_accuracy", "train"), ("val_accuracy", "val"))
                if _series(history, k)[0]]
    if accuracy:
        panels.append(("accuracy (%)", accuracy, 100.0))
    spikes = [(k, lbl) for k, lbl in (("train_spikes_per_sample", "train"),
                                      ("val_spikes_per_sample", "val"))
              if any(v != 0 for v in _series(history, k)[1])]  # ReLU runs log 0 spikes
    if spikes:
        panels.append(("spikes per sample", spikes, 1.0))
    if not panels:
        raise ConfigError("the history has none of train_loss, train_accuracy, val_accuracy, "
                          "val_spikes_per_sample: nothing to plot")
    fig, axs = _figure_for_panels(axes, len(panels), figsize=(7, 2.4 * len(panels) + 0.4),
                                  sharex=True)
    for ax, (label, keys, scale) in zip(axs, panels):
        for key, which in keys:
            xs, ys = _series(history, key, scale)
            ax.plot(xs, ys, marker="." if len(xs) <= 50 else None,
                    ls="--" if which == "train" else "-", label=which)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", frameon=False)
    axs[-1].set_xlabel("epoch")
    _integer_epochs(axs[-1])
    if not spikes:
        axs[0].set_title((title + "\n" if title else "") + "no spikes recorded (ReLU run)",
                         fontsize="small")
    elif title:
        axs[0].set_title(title)
    return _finish(fig, path)


# --------------------------------------------------------------------------- 5. spikes per layer

def _per_layer_rows(per_layer, neurons: Mapping[str, int] | None) -> list[dict]:
    if hasattr(per_layer, "spike_counts") and hasattr(per_layer, "neurons"):  # SimulationResult
        neurons = dict(per_layer.neurons) if neurons is None else neurons
        per_layer = per_layer.spike_counts
    if isinstance(per_layer, Mapping) and "per_layer" in per_layer:  # an evaluation result
        per_layer = per_layer["per_layer"]
    rows: list[dict[str, Any]] = []
    if isinstance(per_layer, Mapping):
        for name, value in per_layer.items():
            if isinstance(value, Tensor):
                value = value.double().mean().item() if value.numel() else 0.0
            rows.append({"name": str(name), "spikes_per_sample": float(value)})
    else:
        for layer in per_layer:
            if not isinstance(layer, Mapping) or "spikes_per_sample" not in layer:
                raise ConfigError("per_layer entries need 'name' and 'spikes_per_sample' "
                                  f"(as metrics.evaluate returns), got {layer!r}")
            rows.append(dict(layer))
    for index, row in enumerate(rows):
        row.setdefault("name", f"layer {index}")
        if neurons and row["name"] in neurons:
            row["neurons"] = neurons[row["name"]]
        if "sparsity" not in row and row.get("neurons"):
            row["sparsity"] = row["spikes_per_sample"] / row["neurons"]
    if not rows:
        raise ConfigError("no spiking layers to plot (is this a ReLU network?)")
    return rows


def spikes_per_layer(per_layer, neurons: Mapping[str, int] | None = None, *,
                     title: str | None = None, ax=None, path: str | Path | None = None):
    """Bar chart of spikes per sample of each spiking layer, with spikes per neuron (the
    sparsity) as a line on a twin axis when the neuron counts are known.

    ``per_layer``: the ``per_layer`` list of :func:`ttfs_plugin.metrics.evaluate` (or the whole
    result), a ``{name: spikes per sample}`` dict (values may be per-sample count tensors) or a
    ``SimulationResult``; ``neurons`` (``{name: count}``) adds the per-neuron axis to a dict.
    """
    rows = _per_layer_rows(per_layer, neurons)
    fig, ax = _figure_for(ax, figsize=(max(6.0, 0.6 * len(rows) + 3), 4.0))
    names = [r["name"] for r in rows]
    spikes = [r["spikes_per_sample"] for r in rows]
    positions = list(range(len(rows)))
    bars = ax.bar(positions, spikes, color=[_layer_colour(i) for i in positions], alpha=0.8,
                  label="spikes per sample")
    ax.bar_label(bars, labels=[f"{s:.3g}" for s in spikes], fontsize="x-small")
    ax.set_xticks(positions, names, rotation=45 if len(rows) > 6 else 0, ha="right"
                  if len(rows) > 6 else "center", fontsize="small")
    ax.set_ylabel("spikes per sample")
    headroom = 1.4  # room above the bars and the line for the legend
    ax.set_ylim(0, headroom * max(max(spikes), 1e-9))
    if all("sparsity" in r for r in rows):
        twin = ax.twinx()
        sparsity = [r["sparsity"] for r in rows]
        twin.plot(positions, sparsity, "o-", color="black", ms=4, lw=1,
                  label="spikes per neuron")
        twin.set_ylabel("spikes per neuron (sparsity)")
        twin.set_ylim(0, headroom * max(max(sparsity), 1e-9))
        handles = [bars] + twin.get_lines()
        ax.legend(handles, [h.get_label() for h in handles], fontsize="x-small",
                  frameon=False, loc="upper center", ncol=2)
    ax.set_title(title or f"{sum(spikes):.4g} spikes per sample over {len(rows)} layers")
    return _finish(fig, path)


# --------------------------------------------------------------------------- 6. kernel errors

#: Figs. 11–13: ``kind -> (error key, representation key, error label, representation label)``.
KERNEL_ERROR_KINDS = {
    "max": ("max_error", "x_max", "maximum (clipping) error, Eq. 10",
            "maximum representation x_max = κ(0)"),
    "min": ("min_error", "x_min", "minimum (pruning) error, Eq. 11",
            "minimum representation x_min = κ(T-1)"),
    "precision": ("precision_error", "max_precision_error", "precision error, Eq. 12",
                  "maximum precision error, Eq. 13"),
}
NO_KERNEL_ERRORS = ("the history records no kernel errors (no 'kernel_errors' entry: a run "
                    "trained before ttfs-plugin recorded them, or without validation data); "
                    "train again to get Figs. 2 and 11–13")


def _as_history(source) -> list[Mapping]:
    """Per-epoch records from a history list, a ``{"history": …}`` dict or a run folder / file."""
    if isinstance(source, (str, Path)):
        source = load_history(source)
    elif isinstance(source, Mapping):
        source = source.get("history", [])
    return [r for r in source if isinstance(r, Mapping)]


def _kernel_error_records(history) -> list[tuple[float, dict]]:
    """``[(epoch, {layer: figures})]`` of the records that hold ``kernel_errors``."""
    found = []
    for i, record in enumerate(_as_history(history)):
        per_layer = record.get("kernel_errors")
        if isinstance(per_layer, Mapping) and per_layer:
            epoch = record.get("epoch")
            found.append((epoch if isinstance(epoch, (int, float)) else i + 1, dict(per_layer)))
    if not found:
        raise ConfigError(NO_KERNEL_ERRORS)
    return found


def _number(value) -> float:
    """A recorded figure as a float (``None``, a non-number: NaN — strict JSON's missing value)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def _layer_names(records: list[tuple[float, dict]]) -> list[str]:
    names: list[str] = []
    for _, per_layer in records:
        names += [n for n in per_layer if n not in names]
    return names


def _per_layer_series(records, key: str) -> dict[str, list[float]]:
    return {name: [_number(per_layer.get(name, {}).get(key)) for _, per_layer in records]
            for name in _layer_names(records)}


def kernel_error_overview(runs, against: str = "epoch", *, axes=None,
                          path: str | Path | None = None):
    """The paper's Fig. 2: the total kernel error (``max + min + precision``, SPEC §11) and the
    representation length ``x_max - x_min``, each the mean over the spiking layers.

    ``runs``: one history (records, a ``metrics.json`` dict, a run folder or file) or a
    ``{label: history}`` dict of several. ``against="epoch"`` draws them over training (one
    run: the layers as thin lines too); ``against="initial_x_max"`` draws each run's last
    epoch over its first epoch's ``x_max`` — the paper's axis, for runs started at different
    ``x_max``.
    """
    if against not in ("epoch", "initial_x_max"):
        raise ConfigError(f"against must be 'epoch' or 'initial_x_max', got {against!r}")
    if isinstance(runs, Mapping) and "history" not in runs:
        named = {str(label): _kernel_error_records(h) for label, h in runs.items()}
    else:
        named = {"": _kernel_error_records(runs)}
    if not named:
        raise ConfigError("no runs to plot")
    from .kernel_errors import network_mean

    fig, (ax_err, ax_len) = _figure_for_panels(axes, 2, figsize=(7, 5.6),
                                               sharex=against == "epoch")
    panels = ((ax_err, "total_error", "total kernel error (mean per neuron)"),
              (ax_len, "range_length", "representation length x_max − x_min"))
    if against == "epoch":
        for ax, key, label in panels:
            for index, (run, records) in enumerate(named.items()):
                xs = [epoch for epoch, _ in records]
                if len(named) == 1:
                    for j, (name, ys) in enumerate(_per_layer_series(records, key).items()):
                        ax.plot(xs, ys, color=_layer_colour(j), lw=0.8, alpha=0.6, label=name)
                ys = [network_mean(per_layer, key) for _, per_layer in records]
                ax.plot(xs, ys, color="black" if len(named) == 1 else _layer_colour(index),
                        lw=2.0, marker="." if len(xs) <= 50 else None,
                        label=run or "mean over layers")
            ax.set_ylabel(label, fontsize="small")
            ax.grid(alpha=0.3)
        ax_len.set_xlabel("epoch")
        _integer_epochs(ax_len)
        _legend(ax_err, len(ax_err.get_lines()))
    else:
        start = {run: network_mean(records[0][1], "x_max") for run, records in named.items()}
        order = sorted(named, key=lambda run: start[run])
        for ax, key, label in panels:
            xs = [start[run] for run in order]
            ys = [network_mean(named[run][-1][1], key) for run in order]
            ax.plot(xs, ys, "o-", color="black")
            for x, y, run in zip(xs, ys, order):
                ax.annotate(run, (x, y), fontsize="x-small", textcoords="offset points",
                            xytext=(4, 4))
            ax.set_ylabel(label + " (last epoch)", fontsize="small")
            ax.set_xlabel("initial maximum representation x_max")
            ax.grid(alpha=0.3)
    ax_err.set_title("kernel error and representation range (Fig. 2)")
    return _finish(fig, path)


def kernel_error_history(history, kind: str = "max", *, axes=None,
                         path: str | Path | None = None):
    """The paper's Figs. 11–13, per spiking layer over training: ``kind="max"`` the maximum
    error and ``x_max`` (Fig. 11), ``"min"`` the minimum error and ``x_min`` (Fig. 12),
    ``"precision"`` the precision error and the maximum precision error of Eq. 13 (Fig. 13).

    ``history``: the per-epoch records (their ``kernel_errors`` entries, SPEC §11), a
    ``metrics.json`` dict, or a run folder / file.
    """
    if kind not in KERNEL_ERROR_KINDS:
        raise ConfigError(f"unknown kernel-error figure {kind!r}; choose one of "
                          f"{list(KERNEL_ERROR_KINDS)}")
    error_key, value_key, error_label, value_label = KERNEL_ERROR_KINDS[kind]
    records = _kernel_error_records(history)
    xs = [epoch for epoch, _ in records]
    fig, (ax_err, ax_val) = _figure_for_panels(axes, 2, figsize=(8, 6), sharex=True)
    marker = "." if len(xs) <= 50 else None
    for ax, key in ((ax_err, error_key), (ax_val, value_key)):
        for index, (name, ys) in enumerate(_per_layer_series(records, key).items()):
            ax.plot(xs, ys, color=_layer_colour(index), marker=marker, label=name)
        ax.grid(alpha=0.3)
    ax_err.set_ylabel(error_label + "\n(mean per neuron)", fontsize="small")
    ax_val.set_ylabel(value_label, fontsize="small")
    ax_val.set_xlabel("epoch")
    _integer_epochs(ax_val)
    figure = {"max": 11, "min": 12, "precision": 13}[kind]
    ax_err.set_title(f"{error_label.split(',')[0]} per layer over training (Fig. {figure})")
    _legend(ax_err, len(_layer_names(records)))
    return _finish(fig, path)


def kernel_error_curves(network_or_kernels, points: int = 1500, *, ncols: int = 4, axes=None,
                        path: str | Path | None = None):
    """The paper's Fig. 10: the kernel error ``e(z) = |relu(z)/theta0 - kappa(t(z))|`` of each
    layer's kernel as a function of the pre-activation ``z`` (log axis), coloured by region —
    pruned (minimum error, red), quantised (precision error, grey), clipped (maximum error,
    purple) — with the firing floor ``thr[T-1]``, the clip level ``thr[0]`` and the maximum
    precision error of Eq. 13 (dashed). The regions come from each layer's threshold table.

    ``network_or_kernels``: a network (every :class:`TemporalKernel` inside it), one kernel or a
    ``{name: TemporalKernel}`` dict.
    """
    from .kernel_errors import max_precision_error, neuron_errors

    if isinstance(network_or_kernels, TemporalKernel):
        kernels = {"kernel": network_or_kernels}
    elif isinstance(network_or_kernels, nn.Module):
        kernels = _kernel_modules(network_or_kernels)
    elif isinstance(network_or_kernels, Mapping) and all(
            isinstance(k, TemporalKernel) for k in network_or_kernels.values()):
        kernels = dict(network_or_kernels)
    else:
        raise ConfigError("kernel_error_curves takes a network, a TemporalKernel or a "
                          "{name: TemporalKernel} dict")
    if not kernels:
        raise ConfigError("the network has no temporal kernels (is it a ReLU network?)")
    if points < 10:
        raise ConfigError(f"points must be >= 10, got {points}")
    n = len(kernels)
    fig, panels = _grid_of_panels(axes, n, ncols)
    regions = (("pruned", FLOOR_COLOUR), ("quantized", "0.3"), ("clipped", CEILING_COLOUR))
    for ax, (name, kernel) in zip(panels, kernels.items()):
        thr = kernel.thresholds().detach().double().cpu()
        kappa = kernel.kernel().detach().double().cpu()
        floor, clip = thr[-1].item(), thr[0].item()
        z = torch.logspace(math.log10(floor / 4), math.log10(clip * 1.5), points,
                           dtype=torch.double)
        error, t = neuron_errors(z, thr, kappa, kernel.theta0)
        masks = {"pruned": t >= thr.numel(), "clipped": t == 0}
        masks["quantized"] = ~(masks["pruned"] | masks["clipped"])
        for region, colour in regions:
            ys = torch.where(masks[region], error, torch.full_like(error, math.nan))
            ax.plot(z.numpy(), ys.numpy(), color=colour, lw=1.0, label=region)
        ax.axvline(floor, color=FLOOR_COLOUR, lw=0.8, ls=":")
        ax.axvline(clip, color=CEILING_COLOUR, lw=0.8, ls=":")
        ax.axhline(max_precision_error(thr, kappa, kernel.theta0), color="0.3", lw=0.8,
                   ls="--", label="max precision error (Eq. 13)")
        ax.set_xscale("log")
        ax.set_title(f"{name}: τ={float(kernel.effective_tau().detach()):.3g}, "
                     f"td={float(kernel.td.detach()):.3g}", fontsize="small")
        ax.set_xlabel("pre-activation z", fontsize="small")
        ax.tick_params(labelsize="x-small")
    panels[0].set_ylabel("kernel error e(z)")
    panels[0].legend(fontsize="xx-small", frameon=False)
    return _finish(fig, path)


# --------------------------------------------------------------------------- 7. parameters

def _strip(ax, position: float, values: Tensor, **style) -> None:
    """All ``values`` at x = ``position``, spread sideways when there are several."""
    values = values.detach().double().cpu().reshape(-1)
    spread = torch.linspace(-0.25, 0.25, values.numel(), dtype=torch.double)
    xs = position + (spread if values.numel() > 1 else torch.zeros(1, dtype=torch.double))
    ax.scatter(xs.numpy(), values.numpy(), **style)


def kernel_parameter_distributions(network: nn.Module, *, axes=None,
                                   path: str | Path | None = None):
    """The paper's Fig. 14: the temporal-kernel parameters ``tau`` and ``td`` of every spiking
    layer (filled: now; hollow: the initial ``tau0``, ``td0`` that TR pulls towards, SPEC §6).
    Per-layer scalars here, so the distribution is the spread over the layers."""
    kernels = _kernel_modules(network)
    if not kernels:
        raise ConfigError("the network has no temporal kernels (is it a ReLU network?)")
    fig, (ax_tau, ax_td) = _figure_for_panels(axes, 2, figsize=(max(7.0, 0.5 * len(kernels)
                                                                     + 3), 5.6), sharex=True)
    for index, kernel in enumerate(kernels.values()):
        colour = _layer_colour(index)
        for ax, now, start in ((ax_tau, kernel.effective_tau(), getattr(kernel, "tau0", None)),
                               (ax_td, kernel.td, getattr(kernel, "td0", None))):
            if isinstance(start, Tensor):
                _strip(ax, index, start, s=30, facecolors="none", edgecolors=colour)
            _strip(ax, index, now, s=24, color=colour)
    names = list(kernels)
    ax_td.set_xticks(range(len(names)), names, rotation=45 if len(names) > 6 else 0,
                     ha="right" if len(names) > 6 else "center", fontsize="small")
    ax_tau.set_ylabel("τ (time constant)")
    ax_td.set_ylabel("td (time delay)")
    for ax in (ax_tau, ax_td):
        ax.grid(alpha=0.3)
        ax.ticklabel_format(axis="y", useOffset=False)
    ax_tau.set_title("temporal-kernel parameters per layer (Fig. 14; ○ initial, ● now)")
    return _finish(fig, path)


def batchnorm_distributions(network: nn.Module, *, axes=None, path: str | Path | None = None):
    """The paper's Fig. 15: the distribution over channels of each batch norm's ``gamma``
    (weight) and ``beta`` (bias) as box plots, with the firing floor ``theta0 * x_min`` of the
    neuron it feeds (red) on the ``beta`` panel — TB (SPEC §7) moves ``beta`` below it."""
    norms = [(name, m) for name, m in network.named_modules()
             if isinstance(m, BATCH_NORMS) and isinstance(getattr(m, "weight", None), Tensor)]
    if not norms:
        raise ConfigError("the network has no batch norm with affine parameters (gamma, beta)")
    floors = {id(norm): cast(SpikingLayer, network.get_submodule(neuron)).firing_floor()
              for neuron, (_, norm) in feeding_norms(network).items()}
    fig, (ax_g, ax_b) = _figure_for_panels(axes, 2, figsize=(max(7.0, 0.5 * len(norms) + 3),
                                                             5.6), sharex=True)
    positions = list(range(len(norms)))
    for ax, attr in ((ax_g, "weight"), (ax_b, "bias")):
        data = [getattr(m, attr).detach().double().cpu().numpy() for _, m in norms]
        ax.boxplot(data, positions=positions, widths=0.6, showfliers=True,
                   flierprops={"markersize": 2})
        ax.grid(alpha=0.3)
    for position, (_, norm) in zip(positions, norms):
        if id(norm) in floors:
            ax_b.plot([position - 0.35, position + 0.35], [float(floors[id(norm)])] * 2,
                      color=FLOOR_COLOUR, lw=1.5)
    names = [name for name, _ in norms]
    ax_b.set_xticks(positions, names, rotation=45 if len(names) > 6 else 0,
                    ha="right" if len(names) > 6 else "center", fontsize="small")
    ax_g.set_ylabel("γ (batch-norm weight)")
    ax_b.set_ylabel("β (batch-norm bias)")
    ax_b.plot([], [], color=FLOOR_COLOUR, lw=1.5, label="θ0·x_min of the neuron it feeds")
    ax_b.legend(fontsize="x-small", frameon=False)
    ax_g.set_title("batch-norm parameters per layer, over channels (Fig. 15)")
    return _finish(fig, path)
