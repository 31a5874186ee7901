"""The TTFS activation in plain PyTorch (SPEC §3–4): the reference every fused kernel must match.

Forward gives ``(x, t)``; backward gives ``dL/dz`` and the four sums the kernel gradients are
made of (:func:`ttfs_plugin.ops.kernel_gradients`). It runs on every device and needs nothing
but torch; the fused kernels fall back to it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def spike_time_dtype(T: int) -> torch.dtype:
    """Spike times are saved for backward: a byte per neuron for ``T < 256``, else int32."""
    return torch.uint8 if T < 256 else torch.int32


def sums_dtype(device: torch.device) -> torch.dtype:
    """The kernel-gradient sums are float64 (MPS has none: float32 there)."""
    return torch.float32 if device.type == "mps" else torch.float64


def forward(z: Tensor, thresholds: Tensor, kernel: Tensor) -> tuple[Tensor, Tensor]:
    """``t = #{k : z < thr[k]}`` (NaN: ``T``) and ``x = kernel[t]``, with ``kernel`` padded to
    ``T + 1`` entries (the last 0: no spike); tables in ``z``'s dtype."""
    T = thresholds.numel()
    ascending = thresholds.flip(0).contiguous()
    t = T - torch.bucketize(z.contiguous(), ascending, right=True)
    t.masked_fill_(torch.isnan(z), T)  # NaN compares false with every threshold: no spike
    return kernel[t], t.to(spike_time_dtype(T))


def backward(grad_x: Tensor, z: Tensor | None, t: Tensor, kernel: Tensor, theta0: float,
             ste: bool, need_z: bool) -> tuple[Tensor, Tensor]:
    """``(dL/dz, sums)``, ``sums = [Σ gx, Σ_q gx, Σ_q gx·t, Σ_q gx·ln(z/θ0)]`` with
    ``gx = g·x`` and ``q`` the quantized neurons (``1 <= t <= T-1``); the last sum and ``z`` are
    needed only by ``ste``. ``dL/dz`` is an empty tensor when ``need_z`` is false."""
    T = kernel.numel() - 1
    quantized = (t - 1) < (T - 1) if t.dtype == torch.uint8 else (t > 0) & (t < T)
    gx = grad_x * kernel[t.long()]  # zero for pruned neurons; in z's dtype, as x was
    zero = grad_x.new_zeros(())
    if need_z and ste:
        assert z is not None, "the ste gradient needs z"
        grad_z = torch.where(quantized, gx / z, zero)
    elif need_z:
        grad_z = grad_x * quantized.to(grad_x.dtype) / theta0
    else:
        grad_z = grad_x.new_empty(0)
    # The sums in float64 (float32 on MPS), as the fused kernels keep them.
    wide = sums_dtype(grad_x.device)
    gx_w = gx.to(wide).flatten()
    gx_q = torch.where(quantized.flatten(), gx_w, gx_w.new_zeros(()))
    s_qt = torch.dot(gx_q, t.flatten().to(wide))
    if ste:
        assert z is not None, "the ste gradient needs z"
        z_q = torch.where(quantized.flatten(), z.flatten().to(wide), gx_w.new_ones(()))
        s_qlog = torch.dot(gx_q, torch.log(z_q)) - math.log(theta0) * gx_q.sum()
    else:
        s_qlog = gx_w.new_zeros(())
    return grad_z, torch.stack([gx_w.sum(), gx_q.sum(), s_qt, s_qlog])
