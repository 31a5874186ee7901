"""Pure operations and losses of the surrogate model (SPEC §3–7).

* :func:`ttfs_activation` — ``x = decode(encode(z))`` with the straight-through gradients of §4;
* :func:`relaxed_activation` and :func:`relaxation_probability` — stochastic relaxation (§5);
* :func:`kernel_regularisation` — the temporal-kernel regulariser (§6);
* :func:`expected_spikes` — the TB spike proxy of one batch-norm layer (§7).
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from . import ops
from .errors import ConfigError, unknown_name
from .kernel import (
    DEFAULT_QUANTIZER,
    check_quantizer,
    check_window,
    silence_padded,
    tables,
)

GRAD_MODES = ("ste", "decode")
SPIKE_PROXY_MODES = ("exact", "taylor", "authors")
#: How a TB layer's per-channel terms add up: ``neuron`` (times the positions per channel, the
#: expected spikes per sample), ``channel`` (one term per channel), ``auto`` (``channel`` for the
#: authors' term, as in their code; ``neuron`` for the others).
TB_WEIGHTINGS = ("auto", "neuron", "channel")


class _TTFSActivation(torch.autograd.Function):
    """``x = kappa(t(z))`` forward; SPEC §4 gradients for ``z``, ``tau`` and ``td`` backward.

    Both directions are one custom op each (:mod:`ttfs_plugin.ops`: fused CPU / CUDA kernels,
    or the PyTorch reference). Saved for backward: ``z`` (``"ste"`` only), a uint8 ``t`` and the
    tiny tables. With ``gx = g * x`` (zero for pruned neurons):

    * ``"ste"``: ``dL/dz = gx / z`` (quantized), ``dL/dtd = sum_clipped gx / tau``,
      ``dL/dtau = [sum_q gx (t - td + tau ln(z/theta0)) - td sum_c gx] / tau^2``;
    * ``"decode"``: ``dL/dz = g / theta0`` (quantized), ``dL/dtd = sum gx / tau``,
      ``dL/dtau = (sum gx t - td sum gx) / tau^2``;

    which are the element-wise rules of SPEC §4 summed over the layer. Differentiable once: a
    second derivative is a clear error, never a silent zero (:class:`_ActivationBackward`).
    Under ``torch.func`` transforms :class:`_TTFSActivationFunc` runs instead.
    """

    @staticmethod
    def forward(ctx, z, tau, td, thresholds, kernel, theta0, grad_mode):
        x, t, padded = _activation_forward(z, thresholds, kernel)
        _save(ctx, z, tau, td, t, padded, theta0, grad_mode)
        return x

    @staticmethod
    def backward(ctx, grad_x):
        return _activation_backward(ctx, grad_x)


class _TTFSActivationFunc(torch.autograd.Function):
    """:class:`_TTFSActivation` as ``torch.func`` wants it (``grad``, ``vmap``, ``jacrev``,
    per-sample gradients, ensembles over stacked parameters): ``forward`` without ``ctx``,
    ``setup_context``, a vmap rule generated from the custom ops' own. ``t`` and the padded
    table come out as extra, non-differentiable outputs for ``setup_context`` to save (about
    40 µs a call more, so plain autograd keeps the classic form)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(z, tau, td, thresholds, kernel, theta0, grad_mode):
        return _activation_forward(z, thresholds, kernel)

    @staticmethod
    def setup_context(ctx, inputs, output):
        z, tau, td, _, _, theta0, grad_mode = inputs
        _, t, padded = output
        ctx.mark_non_differentiable(t, padded)
        _save(ctx, z, tau, td, t, padded, theta0, grad_mode)

    @staticmethod
    def backward(ctx, grad_x, _grad_t, _grad_padded):
        return _activation_backward(ctx, grad_x)


def _activation_forward(z: Tensor, thresholds: Tensor, kernel: Tensor
                        ) -> tuple[Tensor, Tensor, Tensor]:
    padded = silence_padded(kernel.to(z.dtype))
    x, t = ops.activation_forward(z, thresholds.to(z.dtype), padded)
    return x, t, padded


def _save(ctx, z, tau, td, t, padded, theta0: float, grad_mode: str) -> None:
    ste = grad_mode == "ste"
    ctx.save_for_backward(z if ste else None, t, padded, tau, td)
    ctx.theta0, ctx.ste = theta0, ste


def _activation_backward(ctx, grad_x: Tensor) -> tuple:
    z, t, padded, tau, td = ctx.saved_tensors
    need_z, need_tau, need_td = ctx.needs_input_grad[:3]
    args = (grad_x.contiguous(), z, t, padded, ctx.theta0, ctx.ste, need_z)
    if torch.is_grad_enabled():  # create_graph=True or a torch.func transform: the
        grad_z, sums = _ActivationBackward.apply(tau, td, *args)  # a graph that raises
    else:
        grad_z, sums = ops.activation_backward(*args)
    grad_tau, grad_td = ops.kernel_gradients(sums, tau, td, ctx.ste)
    return (grad_z.view_as(grad_x) if need_z else None, grad_tau if need_tau else None,
            grad_td if need_td else None, None, None, None, None)


class _ActivationBackward(torch.autograd.Function):
    """The activation's backward op where a graph of it is kept (``create_graph=True``,
    ``torch.func``): the same numbers, and differentiating them again raises instead of
    silently missing the activation's second derivative (``tau`` and ``td`` are inputs, unused,
    so that the outputs depend on them too)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(tau, td, grad_x, z, t, padded, theta0, ste, need_z):
        return ops.activation_backward(grad_x, z, t, padded, theta0, ste, need_z)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError("the TTFS activation is differentiable once: a second derivative "
                           "through it (a gradient penalty, double backward, "
                           "torch.func.hessian, grad of grad) is not supported")


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
    if torch._C._are_functorch_transforms_active():
        return _TTFSActivationFunc.apply(z, tau, td, thresholds, kernel, float(theta0),
                                         grad_mode)[0]
    return _TTFSActivation.apply(z, tau, td, thresholds, kernel, float(theta0), grad_mode)


def _never_compiled(fn):
    """``torch.compiler.disable(fn)``, made at the first call: applying it at import would import
    ``torch._dynamo`` (about 1.7 s) for every ``import ttfs_plugin``, compiled or not. Outside
    ``torch.compile`` ``fn`` is called as it is (the wrapper costs ~25 µs a call)."""
    disabled = None

    @functools.wraps(fn)
    def call(*args, **kwargs):
        nonlocal disabled
        if not torch.compiler.is_compiling():
            return fn(*args, **kwargs)
        if disabled is None:
            disabled = torch.compiler.disable(fn)
        return disabled(*args, **kwargs)

    return call


@_never_compiled
def eager_tables(tau: Tensor, td: Tensor, T: int, theta0: float, quantizer: str
                 ) -> tuple[Tensor, Tensor]:
    """``(threshold_table, kernel_table)``, detached, always computed eagerly: inside a
    ``torch.compile`` region the fused ``exp`` differs from eager by a few ulps, which moves
    spike times at the thresholds; kept outside, a compiled model fires exactly as the eager one
    and as every simulator (which all use these tables)."""
    with torch.no_grad():
        return tables(tau, td, T, theta0, quantizer)


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
