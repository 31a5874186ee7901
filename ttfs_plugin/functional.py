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
from .kernel import (
    DEFAULT_QUANTIZER,
    check_quantizer,
    check_window,
    decode,
    encode,
    kernel_table,
    threshold_table,
)

GRAD_MODES = ("ste", "decode")
SPIKE_PROXY_MODES = ("exact", "taylor", "authors")
#: How a TB layer's per-channel terms add up: ``neuron`` (times the positions per channel, the
#: expected spikes per sample), ``channel`` (one term per channel), ``auto`` (``channel`` for the
#: authors' term, as in their code; ``neuron`` for the others).
TB_WEIGHTINGS = ("auto", "neuron", "channel")


def _spike_time_dtype(T: int) -> torch.dtype:
    # Spike times are saved for backward; a byte per neuron suffices for the usual windows.
    return torch.uint8 if T < 256 else torch.int32


class _TTFSActivation(torch.autograd.Function):
    """``x = kappa(t(z))`` forward; SPEC §4 gradients for ``z``, ``tau`` and ``td`` backward.

    The backward pass is written as a few fused reductions rather than per-element formulas:
    with ``gx = g * x`` (zero for pruned neurons, since ``x = 0`` there),

    * ``"ste"``: ``dL/dz = gx / z`` (quantized), ``dL/dtd = sum_clipped gx / tau``,
      ``dL/dtau = [sum_q gx (t - td + tau ln(z/theta0)) - td sum_c gx] / tau^2``;
    * ``"decode"``: ``dL/dz = g / theta0`` (quantized), ``dL/dtd = sum gx / tau``,
      ``dL/dtau = (sum gx t - td sum gx) / tau^2``;

    which are the element-wise rules of SPEC §4 summed over the layer.
    """

    @staticmethod
    def forward(ctx, z, tau, td, thresholds, kernel, T, theta0, grad_mode):
        t = encode(z, thresholds)
        x = decode(t, kernel.to(z.dtype))
        ctx.save_for_backward(z, x, t.to(_spike_time_dtype(T)), tau, td)
        ctx.T, ctx.theta0, ctx.grad_mode = T, theta0, grad_mode
        return x

    @staticmethod
    def backward(ctx, grad_x):
        z, x, t_small, tau, td = ctx.saved_tensors
        T, theta0 = ctx.T, ctx.theta0
        tau_z, td_z = tau.to(z.dtype), td.to(z.dtype)
        # quantized <=> 1 <= t <= T-1 (one unsigned comparison: t-1 wraps to the max for t=0)
        quantized = (t_small - 1) < (T - 1) if t_small.dtype == torch.uint8 else (
            (t_small > 0) & (t_small < T))
        gx = grad_x * x  # zero for pruned neurons
        need_z, need_tau, need_td = ctx.needs_input_grad[:3]
        grad_z = grad_tau = grad_td = None

        if ctx.grad_mode == "decode":
            if need_z:
                grad_z = grad_x * quantized.to(z.dtype) / theta0
            sum_gx = gx.sum()
            if need_tau:
                sum_gx_t = torch.dot(gx.flatten(), t_small.flatten().to(z.dtype))
                grad_tau = (sum_gx_t - td_z * sum_gx) / tau_z**2
            if need_td:
                grad_td = sum_gx / tau_z
        else:  # "ste"
            zero = z.new_zeros(())
            if need_z:
                grad_z = torch.where(quantized, gx / z, zero)
            if need_tau or need_td:
                gx_q = torch.where(quantized, gx, zero)
                sum_gx_clipped = gx.sum() - gx_q.sum()  # pruned neurons have gx = 0
                grad_td = sum_gx_clipped / tau_z
                # ln(z/theta0) only where quantized (z > 0 there); 0 elsewhere
                log_z = torch.log(torch.where(quantized, z, z.new_tensor(theta0)) / theta0)
                t_minus_td = t_small.to(z.dtype) - td_z
                sum_q = torch.dot(gx_q.flatten(), (t_minus_td + tau_z * log_z).flatten())
                grad_tau = (sum_q - td_z * sum_gx_clipped) / tau_z**2

        grad_tau = grad_tau.to(tau.dtype) if need_tau else None
        grad_td = grad_td.to(td.dtype) if need_td else None
        return grad_z, grad_tau, grad_td, None, None, None, None, None


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
    quantizer: str = DEFAULT_QUANTIZER,
) -> Tensor:
    """Surrogate TTFS activation ``x = decode(encode(z))``: log-quantised, clipped, pruned ReLU.

    ``tau`` and ``td`` are 0-dim tensors (trainable or not). ``grad_mode`` picks the SPEC §4
    straight-through rule: ``"ste"`` (the authors' code) or ``"decode"`` (the paper's prose).
    ``quantizer`` (SPEC §3) picks the threshold table: ``"ceil"`` or ``"round"``; the gradient
    rules are the same with the ``t`` it gives.
    """
    check_window(T)
    check_grad_mode(grad_mode)
    check_quantizer(quantizer)
    if z.dtype in (torch.float16, torch.bfloat16):
        # Under autocast: spike times need float32 thresholds (bf16 has an 8-bit mantissa).
        z = z.float()
    # Tables are computed in the parameters' dtype and cast to z's, exactly as
    # TemporalKernel.thresholds() does, so every caller sees the same thresholds.
    tau = torch.as_tensor(tau, device=z.device)
    td = torch.as_tensor(td, device=z.device)
    thresholds, kernel = eager_tables(tau, td, T, float(theta0), quantizer)
    return _TTFSActivation.apply(z, tau, td, thresholds, kernel, T, float(theta0), grad_mode)


@torch.compiler.disable
def eager_tables(tau: Tensor, td: Tensor, T: int, theta0: float, quantizer: str
                 ) -> tuple[Tensor, Tensor]:
    """``(threshold_table, kernel_table)``, detached, always computed eagerly: inside a
    ``torch.compile`` region the fused ``exp`` differs from eager by a few ulps, which moves
    spike times at the thresholds; kept outside, a compiled model fires exactly as the eager one
    and as every simulator (which all use these tables)."""
    with torch.no_grad():
        return (threshold_table(tau, td, T, theta0, quantizer), kernel_table(tau, td, T))


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


def kernel_regularisation(tau: Tensor, td: Tensor, tau0: Tensor | float, td0: Tensor | float
                          ) -> Tensor:
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


def authors_tb_term(gamma: Tensor, beta: Tensor, x_T: Tensor) -> Tensor:
    """Per channel, the negated ``q_c`` of the authors' ``bnonn`` loss (SPEC §7):
    ``-[0.5(g²/3 + g + 1)b³ - 0.5 x_T b² - 0.5(x_T² g + 2)b - x_T(x_T² g² + 6)/6]`` with
    ``g = gamma`` (signed), ``b = beta`` and ``x_T = exp(-(T - td)/tau)`` (gradient reaches
    ``tau``, ``td`` through it)."""
    g, b = gamma, beta
    q = (0.5 * (g**2 / 3 + g + 1) * b**3 - 0.5 * x_T * b**2 - 0.5 * (x_T**2 * g + 2) * b
         - x_T * (x_T**2 * g**2 + 6) / 6)
    return -q


def expected_spikes(
    gamma: Tensor, beta: Tensor, floor: Tensor, positions: int, mode: str = "exact",
    x_T: Tensor | None = None, weighting: str = "auto",
) -> Tensor:
    """One TB-normalised layer's term: ``S_l = sum_c n_c * P_c`` (expected spikes per sample;
    ``"exact"``/``"taylor"``), or the authors' ``-sum_c q_c`` (``"authors"``, needs ``x_T``).
    ``weighting`` (:data:`TB_WEIGHTINGS`) sets whether channels count ``n_c`` times."""
    check_spike_proxy_mode(mode)
    if weighting not in TB_WEIGHTINGS:
        raise unknown_name("TB weighting", weighting, TB_WEIGHTINGS)
    if mode == "authors":
        if x_T is None:
            raise ConfigError("tb_mode 'authors' needs x_T = exp(-(T - td)/tau) of the neuron "
                              "the batch norm feeds")
        per_channel = authors_tb_term(gamma, beta, x_T)
        per_neuron = weighting == "neuron"
    else:
        per_channel = spike_probability(gamma, beta, floor, mode)
        per_neuron = weighting != "channel"
    return (positions if per_neuron else 1) * per_channel.sum()
