"""Figures of a TTFS network: spike rasters, kernels, pre-activations, training curves.

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
from .kernel import check_window, encode, kernel_table, spike_regions, threshold_table
from .layers import TemporalKernel
from .roles import SpikingLayer

__all__ = ["spike_raster", "raster_events", "kernel_curves", "kernel_snapshot",
           "kernel_parameters", "collect_preactivations", "preactivation_stats",
           "preactivation_histograms", "load_history", "training_curves", "spikes_per_layer",
           "save_figure"]

INSTALL_HINT = "pip install 'ttfs-plugin[plot]'"
#: Colours of the two firing bounds (the paper's Fig. 7).
FLOOR_COLOUR, CEILING_COLOUR = "tab:red", "tab:purple"


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
                  max_neurons_per_layer: int | None = 100, select: str = "spread") -> dict:
    """The points of :func:`spike_raster`, as plain data.

    Layer ``l`` (dict order, input encoder = 0) fires in window ``l + 1``: a spike at local time
    ``k`` is drawn at global step ``(l + 1) * T + k``. Each layer keeps at most
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
    for index, (name, times) in enumerate(spike_times.items()):
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
            "total_steps": (len(layers) + 1) * T}


def spike_raster(spike_times, T: int | None = None, sample: int = 0,
                 max_neurons_per_layer: int | None = 100, select: str = "spread", *,
                 title: str | None = None, ax=None, path: str | Path | None = None):
    """Raster of one sample's first spikes across all spiking layers, over global time.

    ``spike_times``: ``{layer name: (N, …) spike times}`` with ``T`` meaning no spike, in layer
    order (input encoder first) — ``SimulationResult.spike_times`` or the second value of
    :func:`ttfs_plugin.simulation.surrogate_spike_times` — or a ``SimulationResult`` itself
    (then ``T`` defaults to its own). Neurons are stacked on the y axis by layer; dotted
    vertical lines mark the window boundaries ``w * T``. See :func:`raster_events` for the
    neuron selection.
    """
    if hasattr(spike_times, "spike_times") and hasattr(spike_times, "T"):  # SimulationResult
        T = spike_times.T if T is None else T
        spike_times = spike_times.spike_times
    if T is None:
        raise ConfigError("spike_raster needs the window length T (e.g. network.config.T)")
    events = raster_events(spike_times, T, sample, max_neurons_per_layer, select)
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


def _kernel_values(source, T, theta0) -> dict[str, tuple[float, float, int, float]]:
    """``{name: (tau, td, T, theta0)}`` from a network, a kernel dict or a snapshot."""
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
                            item.theta0 if theta0 is None else float(theta0))
            continue
        tau, td = _tau_td(item, name)
        if T is None:
            raise ConfigError("plotting kernels from (tau, td) values needs the window T, "
                              "e.g. kernel_curves(snapshot, T=32)")
        values[name] = (tau, td, check_window(T), 1.0 if theta0 is None else float(theta0))
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
                  log_thresholds: bool = True, axes=None, path: str | Path | None = None):
    """Per spiking layer: ``kappa(t)`` for ``t = 0 … T-1`` (left) and the threshold table
    ``theta0 * kappa(k)`` as steps (right, log scale by default: the levels of the
    log-quantiser), with ``x_max = kappa(0)`` (circle) and ``x_min = kappa(T-1)`` (triangle)
    marked.

    ``network_or_kernels``: a network (every :class:`TemporalKernel` inside it), one kernel, a
    ``{name: TemporalKernel}`` dict, or a ``{name: (tau, td)}`` snapshot (then ``T`` is needed;
    ``theta0`` defaults to 1). ``T`` / ``theta0`` given with kernels override theirs.
    """
    values = _kernel_values(network_or_kernels, T, theta0)
    fig, (ax_k, ax_t) = _figure_for_panels(axes, 2, figsize=(11, 4.2), side_by_side=True)
    for index, (name, (tau, td, T_l, theta0_l)) in enumerate(values.items()):
        colour = _layer_colour(index)
        kappa = kernel_table(tau, td, T_l).double().numpy()
        thr = threshold_table(tau, td, T_l, theta0_l).double().numpy()
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


def preactivation_stats(network: nn.Module, x: Tensor) -> dict[str, dict]:
    """Per TTFS layer: its pre-activations ``z`` (flat), the firing bounds ``floor`` =
    ``theta0 * x_min`` and ``ceiling`` = ``theta0 * x_max``, and the fractions of neurons
    ``pruned`` (no spike), ``quantized`` (``1 ≤ t ≤ T-1``) and ``clipped`` (``t = 0``) — the
    spike times come from :func:`~ttfs_plugin.kernel.encode` on the layer's own table."""
    stats = {}
    for name, (z, neuron) in collect_preactivations(network, x).items():
        thr = cast(SpikingLayer, neuron).kernel.thresholds().detach().float().cpu()
        t = encode(z, thr)
        total = max(t.numel(), 1)
        fractions = {region: mask.sum().item() / total
                     for region, mask in spike_regions(t, thr.numel()).items()}
        stats[name] = {"z": z.reshape(-1), "floor": thr[-1].item(), "ceiling": thr[0].item(),
                       "T": thr.numel(), **fractions}
    return stats


def _histogram_range(z: Tensor, floor: float, ceiling: float) -> tuple[float, float]:
    """Central 99.8 % of ``z``, widened to show both bounds and 0."""
    sample = z if z.numel() <= 1_000_000 else z[torch.randint(z.numel(), (1_000_000,))]
    finite = sample[torch.isfinite(sample)]
    if finite.numel() == 0:
        return min(0.0, floor), 1.1 * ceiling
    lo, hi = torch.quantile(finite.double(), torch.tensor([0.001, 0.999], dtype=torch.double))
    lo, hi = min(lo.item(), 0.0), max(hi.item(), 1.1 * ceiling, floor)
    return (lo, hi) if hi > lo else (lo - 1.0, hi + 1.0)


def preactivation_histograms(network: nn.Module, x: Tensor, bins: int = 100, *,
                             log: bool = True, ncols: int = 4, axes=None,
                             path: str | Path | None = None):
    """The paper's Fig. 7: per spiking layer, the histogram of its pre-activations ``z`` with
    ``theta0 * x_min`` (red: below it a neuron is pruned) and ``theta0 * x_max`` (purple: above
    it the spike is clipped to ``t = 0``); the title gives the pruned / quantized / clipped
    fractions. Counts are on a log axis unless ``log=False``; the x range is the central
    99.8 % of ``z`` (the fractions count every value).
    """
    stats = preactivation_stats(network, x)
    n = len(stats)
    if axes is not None:
        fig, panels = _figure_for_panels(axes, n)
    else:
        cols = max(1, min(ncols, n))
        rows = math.ceil(n / cols)
        fig, grid = _new_figure(rows, cols, figsize=(3.4 * cols, 2.9 * rows))
        panels = list(grid.flat)
        for extra in panels[n:]:
            extra.set_visible(False)
    for ax, (name, s) in zip(panels, stats.items()):
        z = s["z"]
        lo, hi = _histogram_range(z, s["floor"], s["ceiling"])
        counts = torch.histc(z.double(), bins=bins, min=lo, max=hi).numpy()
        edges = torch.linspace(lo, hi, bins + 1).numpy()
        ax.stairs(counts, edges, fill=True, color="0.45", alpha=0.8)
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
