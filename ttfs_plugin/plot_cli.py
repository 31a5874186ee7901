"""``ttfs plot RUN_OR_CHECKPOINT --out DIR``: the figures of a trained run, as image files.

From the history (the run's ``metrics.json`` / ``metrics.csv``, else the checkpoint's):
``training_curves``, ``fig5_kernel_parameters`` (when it records kernel snapshots),
``fig2_kernel_error_and_range`` and ``fig11_max_error``, ``fig12_min_error``,
``fig13_precision_error`` (when it records ``kernel_errors``; an older run gets a message
instead). From the checkpoint: ``kernels``, ``fig10_kernel_errors`` (``e(z)`` of each kernel),
``fig14_kernel_parameter_distributions``, ``fig15_batchnorm_distributions`` and, from a few
samples of its dataset, ``fig7_preactivations``, ``spikes_per_layer`` and ``spike_raster`` (a
time-stepped snnTorch simulation when snnTorch is installed, else the surrogate's spike times,
which SPEC §8 makes identical).

The ``ttfs`` command adds it with :func:`add_plot_parser` and dispatches to :func:`run_plot`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from .errors import CheckpointError, ConfigError

BACKENDS = ("auto", "snntorch", "norse", "surrogate")
FORMATS = ("png", "pdf", "svg")


def add_plot_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``plot`` sub-command to an argparse ``subparsers`` object; returns its parser."""
    p = subparsers.add_parser(
        "plot", help="figures of a run: training curves, kernels, kernel errors, "
                     "pre-activations, spikes",
        description="Write the figures of a trained run as image files: training curves, "
                    "temporal kernels, the paper's Figs. 2, 5, 7, 10-15 (kernel errors, kernel "
                    "and batch-norm parameters, pre-activation histograms), spikes per layer "
                    "and a spike raster.")
    p.add_argument("run", metavar="RUN_OR_CHECKPOINT",
                   help="run folder written by 'ttfs train --out DIR', or a checkpoint.pt")
    p.add_argument("--out", help="folder for the figures (default: RUN/plots)")
    p.add_argument("--dataset", help="default: the one the checkpoint was trained on")
    p.add_argument("--data-dir", help="default: the one it was trained with")
    p.add_argument("--split", choices=("train", "val"), default="val",
                   help="split the samples come from")
    p.add_argument("--samples", type=int, default=256,
                   help="samples for the pre-activation histograms and spike counts")
    p.add_argument("--sample", type=int, default=0,
                   help="which of them the spike raster shows")
    p.add_argument("--max-neurons", type=int, default=100,
                   help="neurons per layer in the spike raster")
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="spike raster from a time-stepped simulation (auto: snnTorch if "
                        "installed) or from the surrogate's spike times")
    p.add_argument("--format", choices=FORMATS, default="png")
    p.add_argument("--dpi", type=int, default=120)
    return p


def _locate(target: Path) -> tuple[Path | None, Path | None, Path]:
    """``(checkpoint, metrics file, run folder)`` of a run folder or a checkpoint file."""
    if not target.exists():
        raise ConfigError(f"{target} does not exist; pass a run folder written by "
                          "'ttfs train --out DIR' or its checkpoint.pt")
    folder = target if target.is_dir() else target.parent
    metrics = next((folder / n for n in ("metrics.json", "metrics.csv")
                    if (folder / n).is_file()), None)
    if target.is_file():
        if target.suffix in (".json", ".csv"):
            return None, target, folder
        return target, metrics, folder
    from .checkpoint import existing_checkpoints

    checkpoint = next(iter(existing_checkpoints(folder)), None)
    if checkpoint is None and metrics is None:
        raise ConfigError(f"{target} holds no checkpoint.pt, metrics.json or metrics.csv; "
                          "pass a run folder written by 'ttfs train --out DIR'")
    return checkpoint, metrics, folder


def _samples(network, ckpt, args) -> tuple[torch.Tensor, torch.Tensor, str]:
    from .records import evaluation_data
    from .training import batches

    ref = evaluation_data(ckpt.dataset, args.dataset, args.data_dir)
    name = ref.name
    data = ref.load()  # plotting never fetches nor augments data
    if tuple(data.in_shape) != tuple(network.config.in_shape):
        raise ConfigError(f"dataset {name!r} has inputs {tuple(data.in_shape)}, the "
                          f"checkpoint's model expects {tuple(network.config.in_shape)}")
    try:
        x, y = next(iter(batches(data.split(args.split), args.samples)))
    except StopIteration:
        raise ConfigError(f"the {args.split} split of {name!r} holds no samples") from None
    dtype = next(network.parameters()).dtype
    return x.to(dtype), y, name


def _raster_times(network, x: torch.Tensor, backend: str) -> tuple[dict, str]:
    """Spike times of ``x`` from a time-stepped simulation, or from the surrogate."""
    from .simulation import load_adapter, surrogate_spike_times

    order = {"auto": ("snntorch", "norse"), "surrogate": ()}.get(backend, (backend,))
    for name in order:
        try:
            adapter = load_adapter(name)
        except ConfigError:
            if backend != "auto":
                raise
            continue
        net = getattr(adapter, f"to_{name}")(network)
        with torch.no_grad():
            return adapter.simulate(net, x).spike_times, f"{name} simulation"
    return surrogate_spike_times(network, x)[1], "surrogate"


def _kernel_records(history: list, ckpt) -> list[dict]:
    """The history records that hold kernel snapshots: from ``history``, else from the
    checkpoint's own history (``metrics.csv`` has no room for them)."""
    for source in (history, list(ckpt.history) if ckpt is not None else []):
        records = [r for r in source if isinstance(r, dict) and r.get("kernels")]
        if records:
            return records
    return []


def run_plot(args: argparse.Namespace) -> int:
    """Write the figures of ``args.run`` into ``args.out``; print each path written.

    Everything that can fail (paths, checkpoint, dataset, sample index) is checked before the
    first file is written.
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigError("'ttfs plot' needs matplotlib: pip install 'ttfs-plugin[plot]'"
                          ) from None
    from . import plot

    if args.samples < 1:
        raise ConfigError(f"--samples must be >= 1, got {args.samples}")
    if args.max_neurons < 1:
        raise ConfigError(f"--max-neurons must be >= 1, got {args.max_neurons}")
    target = Path(args.run)
    checkpoint, metrics, folder = _locate(target)
    out = Path(args.out) if args.out else folder / "plots"

    network, ckpt = None, None
    if checkpoint is not None:
        from .checkpoint import load_checkpoint

        network, ckpt = load_checkpoint(checkpoint)
    history = plot.load_history(metrics) if metrics is not None else []
    if not history and ckpt is not None:
        history = list(ckpt.history)
    spiking = network is not None and network.is_spiking
    if not history and not spiking:
        if network is None:
            raise ConfigError(f"{target} records no training history: nothing to plot")
        raise CheckpointError(f"{checkpoint} is a ReLU network with no training history: "
                              "nothing to plot (no spikes or kernels either)")
    if spiking:
        x, y, name = _samples(network, ckpt, args)
        if not -x.shape[0] <= args.sample < x.shape[0]:
            raise ConfigError(f"--sample {args.sample} is out of range: {x.shape[0]} samples "
                              "loaded (raise --samples)")

    written: list[Path] = []

    def save(fig, stem: str) -> None:
        written.append(plot.save_figure(fig, out / f"{stem}.{args.format}", dpi=args.dpi))
        print(written[-1])

    def note(message: str) -> None:
        print(f"ttfs plot: {message}", file=sys.stderr)

    if history:
        title = network.config.name if network is not None else ""
        if ckpt is not None and ckpt.dataset is not None:
            title += f" on {ckpt.dataset.name}"
        save(plot.training_curves(history, title=title), "training_curves")
    else:
        note(f"{target} records no training history; no training curves")
    records = _kernel_records(history, ckpt)
    if records:  # a spiking run's history: kernels (and kernel errors) per epoch
        save(plot.kernel_parameters(records), "fig5_kernel_parameters")
        if any(r.get("kernel_errors") for r in records):
            save(plot.kernel_error_overview(records), "fig2_kernel_error_and_range")
            for kind, stem in (("max", "fig11_max_error"), ("min", "fig12_min_error"),
                               ("precision", "fig13_precision_error")):
                save(plot.kernel_error_history(records, kind), stem)
        else:
            note(f"{target}: {plot.NO_KERNEL_ERRORS}")
    if network is None:
        note(f"{target} holds no checkpoint; wrote only the figures of its history")
        return 0
    if not spiking:
        print(f"ttfs plot: {checkpoint} is a ReLU network: no spikes or kernels to plot; "
              "wrote only the training curves", file=sys.stderr)
        return 0

    save(plot.kernel_curves(network), "kernels")
    save(plot.kernel_error_curves(network), "fig10_kernel_errors")
    save(plot.kernel_parameter_distributions(network), "fig14_kernel_parameter_distributions")
    try:
        save(plot.batchnorm_distributions(network), "fig15_batchnorm_distributions")
    except ConfigError as exc:  # a network without batch norm
        note(f"{checkpoint}: {exc}; no Fig. 15")
    save(plot.preactivation_histograms(network, x), "fig7_preactivations")

    from .metrics import evaluate

    result = evaluate(network, [(x, y)])
    save(plot.spikes_per_layer(result, title=(
        f"{result['spikes_per_sample']:.4g} spikes per sample, {100 * result['accuracy']:.1f} % "
        f"accuracy\n({result['samples']} {args.split} samples of {name})")), "spikes_per_layer")

    one = x[args.sample:][:1]
    times, source = _raster_times(network, one, args.backend)
    # an analog-input network's first spiking layer is layer 1 (the relay keeps window 0)
    first_layer = 1 if network.config.input_mode == "analog" else 0
    save(plot.spike_raster(times, network.config.T, 0, args.max_neurons, first_layer=first_layer,
                           title=(
        f"first spikes of {args.split} sample {args.sample} (label {int(y[args.sample])}), "
        f"{source}")), "spike_raster")
    print(f"wrote {len(written)} figures to {out}")
    return 0
