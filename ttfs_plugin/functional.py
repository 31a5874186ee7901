"""Pure operations and losses of the surrogate model (SPEC §3–7).

* :func:`ttfs_activation` — ``x = decode(encode(z))`` with the straight-through gradients of §4;
* :func:`relaxed_activation` and :func:`relaxation_probability` — stochastic relaxation (§5);
* :func:`kernel_regularisation` — the temporal-kernel regulariser (§6);
* :func:`expected_spikes` — the TB spike proxy of one batch-norm layer (§7).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .errors import ConfigError, unknown_name
from .kernel import check_window, decode, encode, kernel_table, threshold_table

GRAD_MODES = ("ste", "decode")
SPIKE_PROXY_MODES = ("exact", "taylor")


def _spike_time_dtype(T: int) -> torch.dtype:
    # Spike times are saved for backward; a byte per neuron suffices for the usual windows.
    return torch.uint8 if T < 256 else torch.int32


class _TTFSActivation(torch.autograd.Function):
    """``x = kappa(t(z))`` forward; SPEC §4 gradients for ``z``, ``tau`` and ``td`` backward."""

    @staticmethod
    def forward(ctx, z, tau, td, T, theta0, grad_mode):  # type: ignore[override]
        t = encode(z, threshold_table(tau, td, T, theta0))
        kernel = kernel_table(tau, td, T).to(z.dtype)
        ctx.save_for_backward(z, t.to(_spike_time_dtype(T)), tau, td)
        ctx.T, ctx.theta0, ctx.grad_mode = T, theta0, grad_mode
        return decode(t, kernel)

    @staticmethod
    def backward(ctx, grad_x):  # type: ignore[override]
        z, t_small, tau, td = ctx.saved_tensors
        T, theta0 = ctx.T, ctx.theta0
        t = t_small.long()
        tau_z, td_z = tau.to(z.dtype), td.to(z.dtype)
        x = decode(t, kernel_table(tau_z, td_z, T))
        spiking = t < T
        clipped = t == 0
        quantized = spiking & ~clipped
        zero = z.new_zeros(())
        t_float = t.to(z.dtype)

        if ctx.grad_mode == "ste":
            # Real spike time t~ = td - tau*ln(z/theta0); t = t~ + const (straight-through).
            safe_z = torch.where(quantized, z, torch.ones_like(z))
            dx_dz = torch.where(quantized, x / safe_z, zero)
            t_real = td_z - tau_z * torch.log(safe_z / theta0)
            dx_dtau = torch.where(
                quantized,
                x * (t_float - t_real) / tau_z**2,
                torch.where(clipped, -x * td_z / tau_z**2, zero),
            )
            dx_dtd = torch.where(clipped, x / tau_z, zero)
        else:  # "decode": t is a constant for the kernel parameters
            dx_dz = quantized.to(z.dtype) / theta0
            dx_dtau = torch.where(spiking, x * (t_float - td_z) / tau_z**2, zero)
            dx_dtd = torch.where(spiking, x / tau_z, zero)

        grad_z = grad_x * dx_dz if ctx.needs_input_grad[0] else None
        grad_tau = (grad_x * dx_dtau).sum().to(tau.dtype) if ctx.needs_input_grad[1] else None
        grad_td = (grad_x * dx_dtd).sum().to(td.dtype) if ctx.needs_input_grad[2] else None
        return grad_z, grad_tau, grad_td, None, None, None


def check_grad_mode(grad_mode: str) -> str:
    if grad_mode not in GRAD_MODES:
        raise unknown_name("gradient mode", grad_mode, GRAD_MODES)
    return grad_mode


def ttfs_activation(
    z: Tensor,
    tau: Tensor,
    td: Tensor,
    T: int,
    theta0: float = 1.0,
    grad_mode: str = "ste",
) -> Tensor:
    """Surrogate TTFS activation ``x = decode(encode(z))``: log-quantised, clipped, pruned ReLU.

    ``tau`` and ``td`` are 0-dim tensors (trainable or not). ``grad_mode`` picks the SPEC §4
    straight-through rule: ``"ste"`` (the authors' code) or ``"decode"`` (the paper's prose).
    """
    check_window(T)
    check_grad_mode(grad_mode)
    # Tables are computed in the parameters' dtype and cast to z's, exactly as
    # TemporalKernel.thresholds() does, so every caller sees the same thresholds.
    tau = torch.as_tensor(tau, device=z.device)
    td = torch.as_tensor(td, device=z.device)
    return _TTFSActivation.apply(z, tau, td, T, float(theta0), grad_mode)


def relaxed_activation(z: Tensor, theta0: float = 1.0) -> Tensor:
    """The relaxed path of stochastic relaxation: ``relu(z) / theta0``."""
    return torch.relu(z) / theta0


def relaxation_probability(epoch: int, target_epoch: int) -> float:
    """``p_relax(e) = max(0, 1 - (e+1)/e_target)`` at 0-based epoch ``e``; 0 when ``e_target=0``."""
    if target_epoch < 0:
        raise ConfigError(f"SR target epoch must be >= 0 (0 turns SR off), got {target_epoch}")
    if target_epoch == 0:
        return 0.0
    return max(0.0, 1.0 - (epoch + 1) / target_epoch)


def kernel_regularisation(tau: Tensor, td: Tensor, tau0: float, td0: float) -> Tensor:
    """One layer's term of ``L_TR``: ``(tau - tau0)^2 + (td - td0)^2``."""
    return (tau - tau0) ** 2 + (td - td0) ** 2


def check_spike_proxy_mode(mode: str) -> str:
    if mode not in SPIKE_PROXY_MODES:
        raise unknown_name("TB spike-proxy mode", mode, SPIKE_PROXY_MODES)
    return mode


def spike_probability(gamma: Tensor, beta: Tensor, floor: Tensor, mode: str = "exact") -> Tensor:
    """Per-channel ``P_c`` that ``z_c ~ N(beta_c, gamma_c^2)`` reaches the firing floor.

    ``floor = theta0 * x_min`` (detached). ``"exact"``: ``1 - Phi(a)``;
    ``"taylor"`` (the paper): ``1 - [1/2 + (a - a^3/6)/sqrt(2*pi)]`` with ``a`` clamped to
    ``[-sqrt(2), sqrt(2)]``, where ``a = (floor - beta)/|gamma|``.
    """
    check_spike_proxy_mode(mode)
    a = (floor.detach() - beta) / gamma.abs().clamp_min(1e-12)
    if mode == "exact":
        return torch.special.ndtr(-a)
    a = a.clamp(-math.sqrt(2.0), math.sqrt(2.0))
    p_prune = 0.5 + (a - a**3 / 6.0) / math.sqrt(2.0 * math.pi)
    return 1.0 - p_prune


def expected_spikes(
    gamma: Tensor, beta: Tensor, floor: Tensor, positions: int, mode: str = "exact"
) -> Tensor:
    """``S_l = sum_c n_c * P_c``: expected spikes per sample of one TB-normalised layer."""
    return positions * spike_probability(gamma, beta, floor, mode).sum()
