"""The TTFS activation as ``torch.library`` custom ops, with fused CPU and CUDA kernels.

``torch.ops.ttfs_plugin.ttfs_forward(z, thresholds, kernel) -> (x, t)`` and
``torch.ops.ttfs_plugin.ttfs_backward(grad_x, z, t, kernel, theta0, ste, need_z) -> (dL/dz,
sums)`` take the threshold and (zero-padded) kernel tables as inputs, so they serve every
quantizer and both gradient modes (SPEC §3–4); :func:`kernel_gradients` turns the sums into
``dL/dtau`` and ``dL/dtd``. They are opaque to ``torch.compile`` (fake kernels give the shapes).

Which kernel runs (:func:`backend_for`): the fused C kernel on CPU (built at first use,
:mod:`.cpu`), the Triton kernel on CUDA (:mod:`.cuda`), the PyTorch reference otherwise, or
everywhere with ``TTFS_FUSED=0`` / :func:`use_backend` ``("reference")``. Spike times and ``x``
are bit-exact between them; the kernel gradients' sums are float64 in the fused kernels.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
from torch import Tensor

from ..errors import unknown_name
from . import cpu, cuda, reference
from .reference import spike_time_dtype, sums_dtype

__all__ = ["BACKENDS", "activation_backward", "activation_forward", "backend_for",
           "kernel_gradients", "spike_time_dtype", "ttfs_backward", "ttfs_forward", "use_backend"]

#: ``fused`` (a fused kernel where the device has one, else the reference) or ``reference``.
BACKENDS = ("fused", "reference")
#: Environment variable: ``0`` makes the PyTorch reference the default everywhere.
FUSED_ENV = "TTFS_FUSED"

_choice: str | None = None


def _preferred() -> str:
    if _choice is not None:
        return _choice
    return "reference" if os.environ.get(FUSED_ENV, "1").strip() in ("0", "false", "no") \
        else "fused"


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Run the activation with ``name`` (one of :data:`BACKENDS`) inside the block."""
    global _choice
    if name not in BACKENDS:
        raise unknown_name("TTFS activation backend", name, BACKENDS)
    previous, _choice = _choice, name
    try:
        yield
    finally:
        _choice = previous


def backend_for(z: Tensor) -> str:
    """The kernel the activation runs for ``z``: ``"cpu"``, ``"cuda"`` or ``"reference"``."""
    if _preferred() == "reference":
        return "reference"
    if cpu.supports(z):
        return "cpu"
    if cuda.supports(z):
        return "cuda"
    return "reference"


_IMPLEMENTATIONS = {"cpu": cpu, "cuda": cuda, "reference": reference}


def _call(which: str, like: Tensor, *args):
    """``which`` (``"forward"``/``"backward"``) of the kernel :func:`backend_for` picks. A
    Triton kernel that fails (install or compiler trouble, not a wrong input: the inputs are
    the reference's too) is given up with a warning and the reference answers."""
    backend = backend_for(like)
    try:
        return getattr(_IMPLEMENTATIONS[backend], which)(*args)
    except Exception as error:  # noqa: BLE001 - only the Triton path falls back
        if backend != "cuda":
            raise
        cuda.give_up(error)
        return getattr(reference, which)(*args)


@torch.library.custom_op("ttfs_plugin::ttfs_forward", mutates_args=())
def ttfs_forward(z: Tensor, thresholds: Tensor, kernel: Tensor) -> tuple[Tensor, Tensor]:
    """Spike times ``t`` (uint8, int32 for ``T >= 256``) and values ``x = kernel[t]``."""
    return _call("forward", z, z, thresholds, kernel)


@ttfs_forward.register_fake
def _(z: Tensor, thresholds: Tensor, kernel: Tensor) -> tuple[Tensor, Tensor]:
    return torch.empty_like(z), z.new_empty(z.shape, dtype=spike_time_dtype(thresholds.shape[0]))


@torch.library.custom_op("ttfs_plugin::ttfs_backward", mutates_args=())
def ttfs_backward(grad_x: Tensor, z: Tensor | None, t: Tensor, kernel: Tensor, theta0: float,
                  ste: bool, need_z: bool) -> tuple[Tensor, Tensor]:
    """``dL/dz`` (empty unless ``need_z``) and the four kernel-gradient sums."""
    return _call("backward", grad_x, grad_x, z, t, kernel, theta0, ste, need_z)


@ttfs_backward.register_fake
def _(grad_x, z, t, kernel, theta0, ste, need_z):
    grad_z = torch.empty_like(grad_x) if need_z else grad_x.new_empty(0)
    return grad_z, grad_x.new_empty(4, dtype=sums_dtype(grad_x.device))


def _per_sample(op):
    """A vmap rule that runs ``op`` once per sample and stacks the outputs at dimension 0:
    right for any in-dims (the backward's sums are per-sample reductions)."""
    def rule(info, in_dims, *args):
        outs = [op(*(a.select(d, b) if d is not None else a for a, d in zip(args, in_dims)))
                for b in range(info.batch_size)]
        return tuple(torch.stack(parts) for parts in zip(*outs)), (0,) * len(outs[0])
    return rule


def _forward_vmap(info, in_dims, z, thresholds, kernel):
    """Only ``z`` batched (one table for all samples): the op is element-wise, one call."""
    if in_dims[1] is None and in_dims[2] is None:
        x, t = ttfs_forward(z, thresholds, kernel)
        return (x, t), (in_dims[0], in_dims[0])
    return _per_sample(ttfs_forward)(info, in_dims, z, thresholds, kernel)


if hasattr(ttfs_forward, "register_vmap"):  # torch >= 2.4; older ones loop with a warning
    ttfs_forward.register_vmap(_forward_vmap)
    ttfs_backward.register_vmap(_per_sample(ttfs_backward))


#: Tensors the kernels may be handed directly: plain ones and parameters (``tau``, ``td``), not
#: subclasses that dispatch (FakeTensor, FunctionalTensor, ...).
_PLAIN_TYPES = (Tensor, torch.nn.Parameter)


def _plain_eager(t: Tensor) -> bool:
    """A plain tensor outside ``torch.compile``, tracing, ``torch.func`` transforms and any
    dispatch mode (FakeTensor, FlopCounter, ...): the kernel can be called directly, skipping
    the custom-op dispatcher (about 20 µs forward and 45 µs backward per call, per layer and
    step)."""
    return (type(t) in _PLAIN_TYPES and not torch.compiler.is_compiling()
            and torch._C._len_torch_dispatch_stack() == 0
            and not torch._C._functorch.is_functorch_wrapped_tensor(t))


def activation_forward(z: Tensor, thresholds: Tensor, kernel: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`ttfs_forward`, the kernel called directly in plain eager mode (same results)."""
    if _plain_eager(z) and _plain_eager(thresholds) and _plain_eager(kernel):
        return _call("forward", z, z, thresholds, kernel)
    return ttfs_forward(z, thresholds, kernel)


def activation_backward(grad_x: Tensor, z: Tensor | None, t: Tensor, kernel: Tensor,
                        theta0: float, ste: bool, need_z: bool) -> tuple[Tensor, Tensor]:
    """:func:`ttfs_backward`, the kernel called directly in plain eager mode (same results)."""
    if _plain_eager(grad_x) and _plain_eager(t) and _plain_eager(kernel) \
            and (z is None or _plain_eager(z)):
        return _call("backward", grad_x, grad_x, z, t, kernel, theta0, ste, need_z)
    return ttfs_backward(grad_x, z, t, kernel, theta0, ste, need_z)


def kernel_gradients(sums: Tensor, tau: Tensor, td: Tensor, ste: bool) -> tuple[Tensor, Tensor]:
    """``(dL/dtau, dL/dtd)`` from ``sums = [S, S_q, S_qt, S_qlog]`` (SPEC §4 summed over a layer):

    * ste: ``dtd = S_c / tau``, ``dtau = (S_qt - td S_q + tau S_qlog - td S_c) / tau^2`` with
      ``S_c = S - S_q`` (the clipped neurons);
    * decode: ``dtd = S / tau``, ``dtau = (S_qt - td S) / tau^2``.

    On CPU in plain eager mode in Python floats (float64, as the tensor path; a dozen 0-dim
    tensor ops would cost ~50 µs per layer and step), elsewhere, and where a graph of them is
    kept, in tensors (no device sync).
    """
    graph = torch.is_grad_enabled() and (sums.requires_grad or tau.requires_grad
                                         or td.requires_grad)  # (floats would cut it)
    if sums.device.type == "cpu" and not graph and _plain_eager(sums) and _plain_eager(tau) \
            and _plain_eager(td) and float(tau) != 0.0:  # (floats raise on a division by 0)
        s_all, s_q, s_qt, s_qlog = sums.tolist()
        grad_tau, grad_td = _kernel_gradient_formula(s_all, s_q, s_qt, s_qlog, float(tau),
                                                     float(td), ste)
        return (torch.tensor(grad_tau, dtype=tau.dtype, device=tau.device),
                torch.tensor(grad_td, dtype=td.dtype, device=td.device))
    t_all, t_q, t_qt, t_qlog = sums.unbind()
    grad_tau_t, grad_td_t = _kernel_gradient_formula(t_all, t_q, t_qt, t_qlog,
                                                     tau.to(sums.dtype), td.to(sums.dtype), ste)
    return grad_tau_t.to(tau.dtype), grad_td_t.to(td.dtype)


def _kernel_gradient_formula(s_all, s_q, s_qt, s_qlog, tau, td, ste: bool):
    """The formulas of :func:`kernel_gradients`, for floats or tensors alike."""
    if ste:
        s_clipped = s_all - s_q
        return (s_qt - td * s_q + tau * s_qlog - td * s_clipped) / tau**2, s_clipped / tau
    return (s_qt - td * s_all) / tau**2, s_all / tau
