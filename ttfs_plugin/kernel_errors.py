"""The kernel errors of the paper's Eq. 10–13 (SPEC §11): what the temporal kernel loses of a
layer's pre-activations, split into the three regions of SPEC §3.

For a neuron with pre-activation ``z``, spike time ``t = encode(z, thr)`` and decoded value
``x = decode(t, kappa)``, its error is the gap between the ReLU it stands for (the relaxed path,
``relu(z)/theta0``) and what its spike carries::

    e(z) = |relu(z)/theta0 - x|

and ``e`` is the **maximum** (clipping) error where ``t = 0`` (Eq. 10: ``z/theta0 - x_max``),
the **minimum** (pruning) error where no spike is fired, ``t = T`` (Eq. 11: ``relu(z)/theta0``)
and the **precision** (quantisation) error otherwise (Eq. 12: ``|z/theta0 - kappa(t)|``). The
regions come from the layer's own threshold table (``thr[0]`` the clip level, ``thr[T-1]`` the
floor), so they follow whatever quantizer built it. The **maximum precision error** (Eq. 13) is
the largest error the quantised region allows: for the ``ceil`` table ``kappa(0) - kappa(1) =
x_max·(1 - exp(-1/tau))``.

* :func:`neuron_errors` — ``e`` and ``t`` per neuron;
* :func:`kernel_errors` — one layer's figures (means per neuron, region fractions, Eq. 13, the
  representation range);
* :func:`network_kernel_errors` — those figures for every spiking layer of a network, on a batch;
* :func:`network_mean` — one figure averaged over the layers (the network's total of Fig. 2).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, cast

import torch
from torch import Tensor, nn

from .errors import ConfigError
from .kernel import decode, encode
from .plot import collect_preactivations  # needs no matplotlib; plot imports this lazily
from .roles import SpikingLayer

__all__ = ["ERROR_KEYS", "neuron_errors", "max_precision_error", "kernel_errors",
           "network_kernel_errors", "network_mean"]

#: The per-layer error figures, each a mean over every neuron of the batch; they add up to
#: ``total_error``.
ERROR_KEYS = ("max_error", "min_error", "precision_error")


def _check_tables(thresholds: Tensor, kernel: Tensor, theta0: float) -> None:
    if not isinstance(thresholds, Tensor) or not isinstance(kernel, Tensor):
        raise ConfigError("thresholds and kernel must be tensors (e.g. neuron.kernel.thresholds()"
                          " and neuron.kernel.kernel())")
    if thresholds.dim() != 1 or thresholds.numel() < 2:
        raise ConfigError(f"thresholds must be a 1-d table of T >= 2 entries, got shape "
                          f"{tuple(thresholds.shape)}")
    if kernel.shape != thresholds.shape:
        raise ConfigError(f"kernel table has shape {tuple(kernel.shape)}, the threshold table "
                          f"{tuple(thresholds.shape)}: both need one entry per time step")
    if bool((thresholds[1:] > thresholds[:-1]).any()):
        raise ConfigError("thresholds must be non-increasing (thr[0] is the clip level, "
                          "thr[T-1] the firing floor)")
    if isinstance(theta0, bool) or not isinstance(theta0, (int, float)) \
            or not math.isfinite(theta0) or theta0 <= 0:
        raise ConfigError(f"theta0 must be a finite number > 0, got {theta0!r}")


def neuron_errors(z: Tensor, thresholds: Tensor, kernel: Tensor,
                  theta0: float = 1.0) -> tuple[Tensor, Tensor]:
    """``(e, t)`` per neuron: ``e = |relu(z)/theta0 - kappa(t)|`` (float64, 0 decoded for
    ``t = T``) and the spike time ``t = encode(z, thresholds)``."""
    _check_tables(thresholds, kernel, theta0)
    if not isinstance(z, Tensor) or not z.is_floating_point():
        raise ConfigError(f"z must be a floating-point tensor, got "
                          f"{z.dtype if isinstance(z, Tensor) else type(z).__name__}")
    z = z.detach()
    t = encode(z, thresholds.detach().to(z.device))
    x = decode(t, kernel.detach().to(z.device, torch.float64))
    error = (z.double().clamp_min(0) / theta0 - x).abs()
    return error, t


def max_precision_error(thresholds: Tensor, kernel: Tensor, theta0: float = 1.0) -> float:
    """Eq. 13: the largest error of the quantised region, from the tables.

    A spike at ``t`` (``1 ≤ t ≤ T-1``) stands for ``z/theta0`` in ``[thr[t], thr[t-1]) / theta0``
    and carries ``kappa(t)``, so the error is at most
    ``max(thr[t-1]/theta0 - kappa(t), kappa(t) - thr[t]/theta0)``; the maximum over ``t``. For
    the ``ceil`` table it is ``kappa(0) - kappa(1)``, for ``round`` ``kappa(1/2) - kappa(1)``.
    """
    _check_tables(thresholds, kernel, theta0)
    thr = thresholds.detach().double().cpu() / theta0
    kappa = kernel.detach().double().cpu()
    above = thr[:-1] - kappa[1:]  # upper end of each cell t = 1 … T-1
    below = kappa[1:] - thr[1:]  # lower end
    return float(torch.maximum(above, below).max())


def kernel_errors(z: Tensor, thresholds: Tensor, kernel: Tensor,
                  theta0: float = 1.0) -> dict[str, float]:
    """One layer's kernel-error figures for pre-activations ``z`` (any shape; every entry is one
    neuron of one sample).

    * ``max_error``, ``min_error``, ``precision_error`` (Eq. 10–12): the mean over all entries of
      ``e`` where the neuron is clipped / pruned / quantised (0 elsewhere), so that they add up
      to ``total_error``, the mean of ``e``;
    * ``clipped``, ``quantized``, ``pruned``: the fractions of entries in each region;
      ``pruned_positive``: those pruned with ``z > 0`` (they carry the minimum error);
    * ``max_precision_error`` (Eq. 13, :func:`max_precision_error`);
    * ``x_max = kappa(0)``, ``x_min = kappa(T-1)``, ``range_length = x_max - x_min`` (the
      representation the spikes carry) and, in units of ``z``, ``clip_level = thr[0]`` and
      ``floor = thr[T-1]`` (the region boundaries).
    """
    if not isinstance(z, Tensor) or z.numel() == 0:
        raise ConfigError("no pre-activations to measure (z is empty)")
    error, t = neuron_errors(z, thresholds, kernel, theta0)
    T = thresholds.numel()
    n = error.numel()
    clipped, pruned = t == 0, t >= T
    quantized = ~(clipped | pruned)
    figures = {
        "max_error": float(error[clipped].sum()) / n,
        "min_error": float(error[pruned].sum()) / n,
        "precision_error": float(error[quantized].sum()) / n,
    }
    figures["total_error"] = float(error.sum()) / n
    kappa = kernel.detach().double().cpu()
    thr = thresholds.detach().double().cpu()
    figures.update({
        "clipped": float(clipped.sum()) / n, "quantized": float(quantized.sum()) / n,
        "pruned": float(pruned.sum()) / n,
        "pruned_positive": float((pruned & (z.detach() > 0)).sum()) / n,
        "max_precision_error": max_precision_error(thresholds, kernel, theta0),
        "x_max": float(kappa[0]), "x_min": float(kappa[-1]),
        "range_length": float(kappa[0] - kappa[-1]),
        "clip_level": float(thr[0]), "floor": float(thr[-1]),
    })
    return figures


@torch.no_grad()
def network_kernel_errors(network: nn.Module, x: Tensor) -> dict[str, dict[str, float]]:
    """``{layer name: kernel_errors(...)}`` of every spiking layer of ``network`` on batch ``x``
    (eval mode, no gradient; the layers are found as :func:`ttfs_plugin.plot.
    collect_preactivations` finds them), each with ``samples`` and ``neurons`` (per sample)."""
    found = {}
    for name, (z, neuron) in collect_preactivations(network, x).items():
        kernel: Any = cast(SpikingLayer, neuron).kernel
        figures = kernel_errors(z, kernel.thresholds().detach().cpu(),
                                kernel.kernel().detach().cpu(), float(kernel.theta0))
        figures["samples"] = int(z.shape[0]) if z.dim() else 1
        figures["neurons"] = int(z[0].numel()) if z.dim() else 1
        found[name] = figures
    return found


def network_mean(per_layer: Mapping[str, Mapping[str, Any]], key: str = "total_error") -> float:
    """``key`` averaged over the layers of a :func:`network_kernel_errors` result (each layer
    weighs the same; a missing or non-finite value is left out, NaN when none is left)."""
    values = [float(v[key]) for v in per_layer.values()
              if isinstance(v, Mapping) and isinstance(v.get(key), (int, float))
              and not isinstance(v.get(key), bool) and math.isfinite(float(v[key]))]
    return sum(values) / len(values) if values else math.nan
