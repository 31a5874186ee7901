"""The temporal kernel, its threshold table, and TTFS encoding / decoding (SPEC §2–3).

Everything here is a pure function of tensors. The surrogate model and every simulator call
:func:`threshold_table` and :func:`kernel_table`, so a spike time computed here is exactly the
spike time a time-stepped simulation produces by comparing ``u >= thr[k]`` step by step.

Notation: ``tau`` time constant, ``td`` time delay, ``T`` window length, ``theta0`` initial
threshold, ``k`` integer local time in ``0 … T-1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Union

import torch
from torch import Tensor

from . import ops
from .errors import ConfigError

Scalar = Union[float, Tensor]

#: Smallest time constant the modules let a trainable ``tau`` reach (see ``TemporalKernel``).
TAU_MIN = 1e-2

#: How a real spike time ``t~ = td - tau*ln(u/theta0)`` becomes an integer step (SPEC §3):
#: ``"ceil"`` the first crossing of ``theta0*kappa(k)``; ``"round"`` (the authors' training and
#: SNN) the first crossing of the half-step-shifted table ``theta0*kappa(k + 1/2)``.
QUANTIZERS = ("ceil", "round")
#: The quantizer a network gets when none is named: ``"ceil"``, chosen by measurement
#: (docs/spec.md §3): ``"round"`` removes the decoded value's bias but, in a deep net started at
#: x_max0 = 1, let more stochastic-relaxation runs collapse.
DEFAULT_QUANTIZER = "ceil"


@dataclass(frozen=True)
class KernelConfig:
    """A layer's initial kernel: window ``T`` (steps), ``tau0``, ``td0`` (steps) and threshold
    scale ``theta0`` — the paper's values by default. Every builder takes its defaults from
    :data:`DEFAULT_KERNEL`, so they are defined here only."""

    T: int = 32
    tau0: float = 10.0
    td0: float = 0.0
    theta0: float = 1.0

    def __post_init__(self) -> None:
        check_window(self.T)
        check_kernel_values(self.tau0, self.td0, self.theta0)




def check_window(T: int) -> int:
    """Return ``T`` if it is a valid window length (an int >= 2), else raise ``ConfigError``."""
    if isinstance(T, bool) or not isinstance(T, int) or T < 2:
        raise ConfigError(f"time window T must be an integer >= 2, got {T!r}; the paper uses T=32")
    return T


def check_kernel_values(tau: float, td: float, theta0: float = 1.0) -> None:
    """Raise ``ConfigError`` unless ``tau > 0``, ``theta0 > 0`` and both are finite numbers."""
    for name, value in (("tau", tau), ("td", td), ("theta0", theta0)):
        if not math.isfinite(float(value)):
            raise ConfigError(f"{name} must be a finite number, got {value!r}")
    if float(tau) <= 0:
        raise ConfigError(f"tau must be > 0, got {tau!r}; the paper initialises tau=10")
    if float(theta0) <= 0:
        raise ConfigError(f"theta0 must be > 0, got {theta0!r}; the paper uses theta0=1.0")


#: The paper's initial kernel (T = 32, tau0 = 10, td0 = 0, theta0 = 1).
DEFAULT_KERNEL = KernelConfig()


def _as_tensor(value: Scalar, like: Tensor | None = None) -> Tensor:
    if isinstance(value, Tensor):
        return value
    dtype = like.dtype if like is not None else torch.get_default_dtype()
    device = like.device if like is not None else None
    return torch.tensor(float(value), dtype=dtype, device=device)


def kernel_table(tau: Scalar, td: Scalar, T: int) -> Tensor:
    """``kappa(k) = exp(-(k - td) / tau)`` for ``k = 0 … T-1`` (differentiable in tau, td)."""
    check_window(T)
    tau_t = _as_tensor(tau, td if isinstance(td, Tensor) else None)
    td_t = _as_tensor(td, tau_t)
    k = torch.arange(T, dtype=tau_t.dtype, device=tau_t.device)
    return torch.exp(-(k - td_t) / tau_t)


def check_quantizer(quantizer: str) -> str:
    """Return ``quantizer`` if it is one of :data:`QUANTIZERS`, else raise ``ConfigError``."""
    if quantizer not in QUANTIZERS:
        raise ConfigError(f"unknown quantizer {quantizer!r}; use one of {list(QUANTIZERS)} "
                          f"('round' is the authors' recipe)")
    return quantizer


def threshold_table(tau: Scalar, td: Scalar, T: int, theta0: float = 1.0,
                    quantizer: str = DEFAULT_QUANTIZER) -> Tensor:
    """The decaying firing threshold, decreasing in ``k`` (SPEC §3):
    ``thr[k] = theta0 * kappa(k)`` (``"ceil"``) or ``theta0 * kappa(k + 1/2)`` (``"round"``:
    the first crossing is then ``t = round(t~)``; the value a spike carries is still
    ``kappa(t)``).

    Entries that would underflow to 0 (tiny ``tau``) are held at the dtype's smallest normal
    number, so ``u <= 0`` never fires; ``encode`` stays exact on such a non-increasing table.
    """
    return tables(tau, td, T, theta0, quantizer)[0]


def tables(tau: Scalar, td: Scalar, T: int, theta0: float = 1.0,
           quantizer: str = DEFAULT_QUANTIZER) -> tuple[Tensor, Tensor]:
    """``(threshold_table, kernel_table)`` in one go: under ``"ceil"`` the thresholds are the
    kernel table scaled (one ``exp`` for both); the values are those of the two functions."""
    check_quantizer(quantizer)
    tau_t = _as_tensor(tau, td if isinstance(td, Tensor) else None)
    td_t = _as_tensor(td, tau_t)
    kernel = kernel_table(tau_t, td_t, T)
    shifted = kernel if quantizer == "ceil" else kernel_table(tau_t, td_t - 0.5, T)
    thresholds = theta0 * shifted
    return thresholds.clamp_min(torch.finfo(thresholds.dtype).tiny), kernel


def x_max(tau: Scalar, td: Scalar) -> Tensor:
    """Largest value a spike can carry: ``kappa(0) = exp(td / tau)``."""
    tau_t = _as_tensor(tau)
    return torch.exp(_as_tensor(td, tau_t) / tau_t)


def x_min(tau: Scalar, td: Scalar, T: int) -> Tensor:
    """Smallest value a spike can carry: ``kappa(T-1)`` (the firing floor is ``thr[T-1]`` of
    the table in use, which is lower under ``"round"``)."""
    tau_t = _as_tensor(tau)
    return torch.exp(-((T - 1) - _as_tensor(td, tau_t)) / tau_t)


def encode(u: Tensor, thresholds: Tensor, dtype: torch.dtype = torch.long) -> Tensor:
    """Spike time ``t = #{k : u < thr[k]}`` (``dtype``, int64 by default; ``T`` means no spike).

    Equals the first ``k`` with ``u >= thr[k]`` of a step-by-step simulation, bit for bit: the
    fused forward op (:mod:`ttfs_plugin.ops`) counts ``thr[k] <= u`` with the same float
    comparison the simulator makes (its PyTorch reference: ``bucketize`` on the ascending table),
    needs no ``T``-fold temporary, and never fires NaN.
    """
    return encode_and_decode(u, thresholds, thresholds.new_zeros(thresholds.numel()), dtype)[0]


def encode_and_decode(u: Tensor, thresholds: Tensor, kernel: Tensor,
                      dtype: torch.dtype = torch.long) -> tuple[Tensor, Tensor]:
    """``(encode(u, thresholds, dtype), decode(t, kernel))`` in one pass of the fused op: the
    value is the same gather from the same table, so the same bits."""
    thr = thresholds.detach().to(u.dtype)
    values, t = ops.activation_forward(u.detach(), thr, silence_padded(kernel.to(u.dtype)))
    return t.to(dtype), values


def silence_padded(kernel: Tensor) -> Tensor:
    """The ``T + 1`` entries ``kappa(0) … kappa(T-1), 0``: what spike time ``t`` carries, ``T``
    (no spike) carrying nothing."""
    return torch.cat([kernel, kernel.new_zeros(1)])


def decode(t: Tensor, kernel: Tensor) -> Tensor:
    """Value a spike at time ``t`` carries: ``kappa(t)``, and ``0`` for ``t == T`` (no spike)."""
    return silence_padded(kernel)[t]


def spike_regions(t: Tensor, T: int) -> dict[str, Tensor]:
    """Boolean masks of the three regions: clipped (t=0), quantized (1…T-1), pruned (t=T)."""
    return {"clipped": t == 0, "quantized": (t > 0) & (t < T), "pruned": t >= T}
