"""Surrogate-model layers as ordinary ``nn.Module`` s.

* :class:`TemporalKernel` — a layer's trainable ``(tau, td)`` as real ``nn.Parameter`` s, with its
  kernel and threshold tables;
* :class:`TTFSActivation` — the TTFS neuron of the surrogate DNN, with stochastic relaxation;
* :class:`InputEncoder` — layer 0: encodes input intensities as first-spike times;
* :class:`TBBatchNorm1d` / :class:`TBBatchNorm2d` — batch norm that can report its expected spikes
  (the temporal-kernel-aware batch normalisation of SPEC §7).

A module that exposes ``firing_floor()`` (``theta0 * x_min``, detached) is a TTFS neuron for the
TB loss; a module that exposes ``count_spikes(z)`` is counted by :mod:`ttfs_plugin.metrics`. No
global registry and no ``isinstance`` list: adapters for other frameworks follow the same protocol.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from . import functional as F
from .errors import ConfigError, InputShapeError
from .kernel import (
    DEFAULT_KERNEL,
    DEFAULT_QUANTIZER,
    TAU_MIN,
    check_kernel_values,
    check_quantizer,
    check_window,
    encode,
    kernel_table,
    threshold_table,
)
from .roles import Relaxable


class TemporalKernel(nn.Module):
    """``kappa(t) = exp(-(t - td)/tau)`` with trainable ``tau``, ``td`` (SPEC §2).

    ``tau`` stays positive by clamping: the tables use ``max(tau, TAU_MIN)``. The raw parameter is
    left untouched so the kernel regulariser, which acts on it directly, can pull it back.
    ``tau0`` and ``td0`` (the initial values, the centre of ``L_TR``) are saved as buffers.
    ``quantizer`` (SPEC §3, ``"ceil"`` or ``"round"``) picks the threshold table.
    """

    tau0: Tensor  # buffers, registered in __init__
    td0: Tensor

    def __init__(self, T: int = DEFAULT_KERNEL.T, tau: float = DEFAULT_KERNEL.tau0,
                 td: float = DEFAULT_KERNEL.td0, theta0: float = DEFAULT_KERNEL.theta0,
                 trainable: bool = True, quantizer: str = DEFAULT_QUANTIZER) -> None:
        super().__init__()
        self.T = check_window(T)
        check_kernel_values(tau, td, theta0)
        self.theta0 = float(theta0)
        self.quantizer = check_quantizer(quantizer)
        self.tau = nn.Parameter(torch.tensor(float(tau)), requires_grad=trainable)
        self.td = nn.Parameter(torch.tensor(float(td)), requires_grad=trainable)
        self.register_buffer("tau0", torch.tensor(float(tau)))
        self.register_buffer("td0", torch.tensor(float(td)))

    def effective_tau(self) -> Tensor:
        """``tau`` clamped to ``TAU_MIN`` so the kernel stays defined."""
        return self.tau.clamp_min(TAU_MIN)

    def kernel(self) -> Tensor:
        """``kappa(k)`` for ``k = 0 … T-1``."""
        return kernel_table(self.effective_tau(), self.td, self.T)

    def thresholds(self) -> Tensor:
        """``thr[k]`` (``theta0 * kappa(k)``, or ``theta0 * kappa(k + 1/2)`` for ``"round"``),
        the table every simulator shares."""
        return threshold_table(self.effective_tau(), self.td, self.T, self.theta0,
                               self.quantizer)

    def firing_floor(self) -> Tensor:
        """``thr[T-1]``: the lowest membrane potential that still spikes (detached; the table is
        built without autograd, so asking for it every step costs a few small ops)."""
        with torch.no_grad():
            return self.thresholds()[-1]

    def regularisation(self) -> Tensor:
        """This layer's ``L_TR`` term: ``(tau - tau0)^2 + (td - td0)^2``."""
        return F.kernel_regularisation(self.tau, self.td, self.tau0, self.td0)

    def extra_repr(self) -> str:
        quantizer = "" if self.quantizer == DEFAULT_QUANTIZER else f", quantizer={self.quantizer!r}"
        return (f"T={self.T}, tau={self.tau.item():.4g}, td={self.td.item():.4g}, "
                f"theta0={self.theta0:g}{quantizer}")


class TTFSActivation(nn.Module):
    """The TTFS neuron of the surrogate DNN: ``x = decode(encode(z))`` (SPEC §3–5).

    In training, with probability ``relax_probability`` (set each epoch by the trainer, see
    :func:`ttfs_plugin.functional.relaxation_probability`) the whole layer takes the relaxed path
    ``relu(z)/theta0`` for this forward pass. Never relaxed in eval mode.
    """

    relaxable = True

    def __init__(self, T: int = DEFAULT_KERNEL.T, tau: float = DEFAULT_KERNEL.tau0,
                 td: float = DEFAULT_KERNEL.td0, theta0: float = DEFAULT_KERNEL.theta0,
                 grad_mode: str = "ste", quantizer: str = DEFAULT_QUANTIZER) -> None:
        super().__init__()
        self.kernel = TemporalKernel(T, tau, td, theta0, quantizer=quantizer)
        self.grad_mode = F.check_grad_mode(grad_mode)
        self.relax_probability = 0.0
        self.relax_generator: torch.Generator | None = None  # SR draws (same on every rank)

    @property
    def T(self) -> int:
        return self.kernel.T

    @property
    def theta0(self) -> float:
        return self.kernel.theta0

    def forward(self, z: Tensor) -> Tensor:
        if (self.training and self.relaxable and self.relax_probability > 0
                and torch.rand((), generator=self.relax_generator).item()
                < self.relax_probability):
            return F.relaxed_activation(z, self.theta0)
        return F.ttfs_activation(z, self.kernel.effective_tau(), self.kernel.td, self.T,
                                 self.theta0, self.grad_mode, self.kernel.quantizer)

    def spike_times(self, z: Tensor) -> Tensor:
        """Integer spike time of every neuron for pre-activation ``z`` (``T`` = no spike)."""
        return encode(z, self.kernel.thresholds())

    def count_spikes(self, z: Tensor) -> Tensor:
        """Spikes per sample (shape ``(N,)``) this layer emits for pre-activation ``z``."""
        fired = z.detach() >= self.firing_floor().to(z.dtype)
        return fired.flatten(1).sum(1)

    def firing_floor(self) -> Tensor:
        return self.kernel.firing_floor()

    def extra_repr(self) -> str:
        return f"grad_mode={self.grad_mode!r}"


def set_relaxation(network: nn.Module, probability: float,
                   generator: torch.Generator | None = None) -> None:
    """Set the SR probability (and the generator of the draws: the same seed on every DDP rank
    keeps the ranks in step) of every TTFS neuron in ``network``, whatever holds it."""
    for module in network.modules():
        if isinstance(module, Relaxable):
            holder: Any = module  # any module with the attribute, not only TTFSActivation
            holder.relax_probability = float(probability)
            holder.relax_generator = generator


class InputEncoder(TTFSActivation):
    """Layer 0: input intensities (in [0, 1]) become first-spike times; never relaxed.

    Checks what it is given (:func:`check_input`): shape ``(N, *sample_shape)``, a float tensor
    of the encoder's dtype (bool is read as 0/1), finite values in ``[0, 1]``.
    ``frozen_kernel=True`` keeps its ``tau``, ``td`` at their initial values (``requires_grad``
    off): nothing before the first weight op then needs a gradient, so autograd skips that
    op's input gradient (a cheaper step).
    """

    relaxable = False
    is_input_layer = True  # its spikes are reported apart (the authors' counts leave them out)

    def __init__(self, sample_shape: tuple[int, ...], T: int = DEFAULT_KERNEL.T,
                 tau: float = DEFAULT_KERNEL.tau0, td: float = DEFAULT_KERNEL.td0,
                 theta0: float = DEFAULT_KERNEL.theta0, grad_mode: str = "ste",
                 quantizer: str = DEFAULT_QUANTIZER, frozen_kernel: bool = False) -> None:
        super().__init__(T, tau, td, theta0, grad_mode, quantizer)
        self.sample_shape = tuple(int(s) for s in sample_shape)
        if frozen_kernel:
            self.kernel.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(check_input(x, self.sample_shape, self.kernel.tau.dtype))

    def extra_repr(self) -> str:
        return f"sample_shape={self.sample_shape}, " + super().extra_repr()


#: How a network's first weight op receives the image (SPEC §8): ``"encode"``, through the input
#: encoder's spikes (layer 0 spikes, counted); ``"analog"`` (the authors' runs), the image itself
#: (:class:`AnalogInput`: no input spikes; the time schedule is unchanged).
NETWORK_INPUT_MODES = ("encode", "analog")


def check_network_input_mode(mode: str) -> str:
    if mode not in NETWORK_INPUT_MODES:
        raise ConfigError(f"unknown input_mode {mode!r}; use 'encode' (input encoder spikes) or "
                          "'analog' (the image straight into the first weight op, the authors' "
                          "runs)")
    return mode


class AnalogInput(nn.Module):
    """Layer 0 of an analog-input network: checks the batch as :class:`InputEncoder` does
    (shape, dtype, finite, in ``[0, 1]``) and passes it on unchanged, so the first weight op
    gets ``W·x``. Not a spiking layer: no spikes, no kernel, nothing counted. Its time slot is
    kept (window 0), so latency and every layer's windows are those of an encoding network.
    """

    dtype_probe: Tensor  # buffer, registered in __init__

    def __init__(self, sample_shape: tuple[int, ...], T: int = DEFAULT_KERNEL.T) -> None:
        super().__init__()
        self.sample_shape = tuple(int(s) for s in sample_shape)
        self.T = check_window(T)
        # empty: follows .to(dtype) so the input dtype can be checked like the encoder's
        self.register_buffer("dtype_probe", torch.zeros(0), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return check_input(x, self.sample_shape, self.dtype_probe.dtype)

    def extra_repr(self) -> str:
        return f"sample_shape={self.sample_shape}, T={self.T}"


#: The fix every range message names: how images become intensities in [0, 1].
SCALE_HINT = ("scale images to [0, 1] with ToTensor() (or x.float() / 255 for uint8) and do not "
              "mean/std-normalise")


def check_input(x: Tensor, sample_shape: tuple[int, ...],
                dtype: torch.dtype | None = None) -> Tensor:
    """``x`` if it is a valid input batch of ``sample_shape``, else ``InputShapeError``.

    Valid: a tensor of shape ``(N, *sample_shape)``; floating (of ``dtype`` when given) or bool
    (returned as 0/1 of ``dtype``, or of the default dtype); finite; within ``[0, 1]``. Integer
    tensors are refused (a uint8 image is 0…255: divide by 255). The value check is one pass
    over ``x`` (:func:`check_intensities`).
    """
    expected = "(N, " + ", ".join(str(s) for s in sample_shape) + ")"
    if not isinstance(x, Tensor):
        raise InputShapeError(
            f"expected a torch.Tensor of shape {expected}, got {type(x).__name__}")
    if tuple(x.shape[1:]) != sample_shape or x.dim() != len(sample_shape) + 1:
        hint = ""
        if x.dim() == len(sample_shape) + 1 and x.shape[1] != sample_shape[0]:
            hint = f" ({x.shape[1]} channels where the model expects {sample_shape[0]})"
        raise InputShapeError(
            f"input of shape {tuple(x.shape)} does not match the model's {expected}{hint}; "
            f"reshape it, e.g. x.view(-1, {', '.join(str(s) for s in sample_shape)})")
    if x.dtype == torch.bool:
        return x.to(dtype or torch.get_default_dtype())  # 0/1: in range by construction
    if not x.is_floating_point():
        hint = ("x.float() / 255 (what ToTensor() does)" if x.dtype == torch.uint8 else
                "x.float(), scaled to [0, 1]")
        raise InputShapeError(f"input must be a float tensor scaled to [0, 1], got {x.dtype}; "
                              f"convert it with {hint}")
    if dtype is not None and x.dtype != dtype:
        raise InputShapeError(f"input is {x.dtype} but the model is {dtype}; convert one of "
                              f"them, e.g. x.to({dtype})")
    check_intensities(x)
    return x


def check_intensities(x: Tensor, in_range: bool = True) -> None:
    """Raise ``InputShapeError`` unless every value of the float tensor ``x`` is finite and (with
    ``in_range``) within ``[0, 1]``. One ``aminmax`` pass and one host sync: NaN propagates into
    both ends, so the two numbers say everything."""
    if x.numel() == 0:
        return
    low, high = torch.stack(torch.aminmax(_all_values(x).detach())).tolist()
    if not (math.isfinite(low) and math.isfinite(high)):
        raise InputShapeError(f"inputs contain NaN or inf (min {low:.4g}, max {high:.4g}); clean "
                              f"the data (e.g. torch.nan_to_num) and {SCALE_HINT}")
    if in_range and (low < 0 or high > 1):
        raise InputShapeError(f"inputs must lie in [0, 1] (got min {low:.4g}, max {high:.4g}); "
                              f"{SCALE_HINT}")


def _all_values(x: Tensor) -> Tensor:
    """``x``, or under ``torch.func`` transforms the plain tensor behind it (for ``vmap``, every
    sample's values): what a value check may read, where the wrapped tensor has no data."""
    functorch = torch._C._functorch
    while functorch.is_functorch_wrapped_tensor(x):
        x = functorch.get_unwrapped(x)
    return x


class _TBBatchNorm:
    """Mixin: remembers positions per channel and turns (gamma, beta) into expected spikes."""

    positions: int | None = None
    # from the nn.BatchNorm1d / nn.BatchNorm2d this is mixed into
    affine: bool
    weight: nn.Parameter
    bias: nn.Parameter

    def _remember_positions(self, x: Tensor) -> None:
        self.positions = int(math.prod(x.shape[2:])) if x.dim() > 2 else 1

    def expected_spikes(self, floor: Tensor, mode: str = "exact", x_T: Tensor | None = None,
                        weighting: str = "auto") -> Tensor:
        """``S_l = sum_c n_c * P_c`` with ``z_c ~ N(beta_c, gamma_c^2)``, or the authors' term
        (``mode="authors"``, from ``x_T``) (SPEC §7; see ``functional.expected_spikes``)."""
        if self.positions is None:
            raise ConfigError("TB loss needs one forward pass first (to know H*W per channel)")
        if not self.affine:
            raise ConfigError("TB batch norm needs affine=True (gamma and beta are trained)")
        return F.expected_spikes(self.weight, self.bias, floor, self.positions, mode, x_T,
                                 weighting)


class TBBatchNorm1d(_TBBatchNorm, nn.BatchNorm1d):
    """``nn.BatchNorm1d`` that feeds a TTFS neuron and can report its expected spikes."""

    def forward(self, x: Tensor) -> Tensor:
        self._remember_positions(x)
        return super().forward(x)


class TBBatchNorm2d(_TBBatchNorm, nn.BatchNorm2d):
    """``nn.BatchNorm2d`` that feeds a TTFS neuron and can report its expected spikes."""

    def forward(self, x: Tensor) -> Tensor:
        self._remember_positions(x)
        return super().forward(x)
