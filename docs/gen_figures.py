"""Draw the pictures of ``docs/concepts.md`` into ``docs/img/``.

    python docs/gen_figures.py

Only the kernel functions of ``ttfs_plugin.kernel`` and matplotlib (the ``plot`` extra); no
training, a few seconds. Re-run it when the kernel maths changes and commit the PNGs.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ttfs_plugin.kernel import decode, encode, kernel_table, threshold_table

OUT = Path(__file__).resolve().parent / "img"
T, TAU, THETA0 = 32, 10.0, 1.0
KERNELS = [  # (label, tau, td)
    ("τ = 10, td = 0 (x_max = 1)", 10.0, 0.0),
    ("τ = 10, td = 10 ln 2 (x_max = 2)", 10.0, 10.0 * math.log(2.0)),
    ("τ = 5, td = 0", 5.0, 0.0),
]


def _figure(width: float, height: float, ncols: int = 1):
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, ncols)


def kernel_figure(path: Path) -> None:
    """kappa(t) for a few (tau, td), with x_max = kappa(0) and x_min = kappa(T-1) marked."""
    fig, ax = _figure(6.4, 3.6)
    k = torch.arange(T)
    for index, (label, tau, td) in enumerate(KERNELS):
        kappa = kernel_table(tau, td, T).double()
        colour = f"C{index}"
        ax.plot(k, kappa, marker=".", ms=4, color=colour, label=label)
        ax.plot([0], [kappa[0]], "o", mfc="none", ms=8, color=colour)
        ax.plot([T - 1], [kappa[-1]], "v", mfc="none", ms=8, color=colour)
    ax.set_xlabel("local time t (steps)")
    ax.set_ylabel("κ(t) = exp(−(t − td)/τ)")
    ax.set_title(f"temporal kernels, T = {T} (○ x_max = κ(0), ▽ x_min = κ(T−1))",
                 fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
    fig.savefig(path, dpi=110)


def threshold_figure(path: Path) -> None:
    """The decaying threshold theta0*kappa(k) and the spike times of a few membrane values."""
    fig, ax = _figure(6.4, 3.6)
    thr = threshold_table(TAU, 0.0, T, THETA0).double()
    ax.step(list(range(T)) + [T], list(thr) + [thr[-1]], where="post", color="black",
            label="threshold θ0·κ(k)")
    for index, u in enumerate((1.4, 0.6, 0.2, 0.06, 0.03)):
        t = int(encode(torch.tensor([u], dtype=torch.double), thr)[0])
        colour = f"C{index}"
        ax.axhline(u, color=colour, lw=0.8, ls="--")
        if t < T:
            ax.plot([t], [u], "o", color=colour, label=f"u = {u:g} → spike at t = {t}")
        else:
            ax.text(T - 0.5, u * 1.08, f"u = {u:g}: below θ0·x_min, no spike", color=colour,
                    ha="right", va="bottom", fontsize="small")
    ax.set_yscale("log")
    ax.set_xlabel("local time step k")
    ax.set_ylabel("membrane u, threshold")
    ax.set_title(f"first spike at min{{k : u ≥ θ0·κ(k)}} (τ = {TAU:g}, td = 0)",
                 fontsize="medium")
    ax.legend(frameon=False, fontsize="small", loc="upper right")
    fig.savefig(path, dpi=110)


def activation_figure(path: Path) -> None:
    """The surrogate activation x = decode(encode(z)): a clipped, log-quantised, pruned ReLU."""
    fig, (ax, ax_zoom) = _figure(9.6, 3.6, ncols=2)
    T_small = 8  # a short window makes the quantisation steps visible
    for axis, window, z_max in ((ax, T_small, 1.6), (ax_zoom, T, 0.25)):
        kappa = kernel_table(TAU / 4 if axis is ax else TAU, 0.0, window).double()
        thr = THETA0 * kappa
        z = torch.linspace(-0.1 * z_max, z_max, 4000, dtype=torch.double)
        x = decode(encode(z, thr), kappa)
        floor, ceiling = thr[-1].item(), thr[0].item()
        axis.axvspan(z[0].item(), floor, color="tab:red", alpha=0.08)
        axis.axvspan(floor, ceiling, color="tab:green", alpha=0.06)
        axis.axvspan(ceiling, z_max, color="tab:purple", alpha=0.08)
        axis.plot(z, z.clamp(min=0) / THETA0, color="0.6", ls="--", label="ReLU z/θ0")
        axis.plot(z, x, color="black", label="TTFS x = κ(t(z))")
        axis.axvline(floor, color="tab:red", lw=1)
        axis.axvline(ceiling, color="tab:purple", lw=1)
        top = min(z_max, 1.1 * ceiling)
        axis.set_ylim(-0.02 * top, 1.1 * top)
        axis.set_xlabel("pre-activation z")
        axis.set_xlim(z[0].item(), z_max)
    ax.text(0.02, 0.93, "pruned", color="tab:red", transform=ax.transAxes)
    ax.text(0.35, 0.93, "quantized", color="tab:green", transform=ax.transAxes)
    ax.text(0.7, 0.93, "clipped", color="tab:purple", transform=ax.transAxes)
    ax.set_ylabel("activation x")
    ax.set_title(f"T = {T_small}, τ = {TAU / 4:g}: regions", fontsize="medium")
    ax.legend(frameon=False, loc="lower right", fontsize="small")
    ax_zoom.set_title(f"T = {T}, τ = {TAU:g}: near θ0·x_min (log-spaced levels)",
                      fontsize="medium")
    fig.savefig(path, dpi=110)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, draw in (("kernel.png", kernel_figure), ("thresholds.png", threshold_figure),
                       ("activation.png", activation_figure)):
        draw(OUT / name)
        print(OUT / name)


if __name__ == "__main__":
    main()
