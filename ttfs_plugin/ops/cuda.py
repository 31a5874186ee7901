"""The fused CUDA kernels, written in Triton (shipped with CUDA builds of PyTorch; no compiler
to install). Same formulas as ``ttfs_activation.c``: forward counts ``thr[k] <= z`` and gathers
``x = kernel[t]``; backward writes ``dL/dz`` and, per block, the four float64 kernel-gradient
sums, added afterwards in a fixed order (deterministic). With ``TRITON_INTERPRET=1`` the same
kernels run on CPU tensors, which is how the tests check them on a machine without a GPU.
Float32 divisions use ``tl.math.div_rn`` (IEEE round-to-nearest, as torch divides): Triton's plain
``/`` on float32 is an approximate division on NVIDIA GPUs, which would move ``dL/dz`` by an ulp.
"""

from __future__ import annotations

import importlib.util
import warnings

import torch
from torch import Tensor

from .reference import spike_time_dtype

SUPPORTED_DTYPES = (torch.float32, torch.float64)
BLOCK = 1024


def available() -> bool:
    """Whether Triton can be imported (it is not imported until a CUDA tensor needs it)."""
    return importlib.util.find_spec("triton") is not None


_failure: str | None = None


def supports(z: Tensor) -> bool:
    return (z.device.type == "cuda" and z.dtype in SUPPORTED_DTYPES and _failure is None
            and available())


def failure() -> str | None:
    """Why the Triton kernels were given up (``None``: they were not)."""
    return _failure


def give_up(error: BaseException) -> None:
    """Stop using the Triton kernels in this process (a broken Triton install, a GPU it cannot
    compile for), with one warning; the PyTorch reference runs instead."""
    global _failure
    _failure = f"{type(error).__name__}: {error}"
    warnings.warn(f"ttfs_plugin: the fused CUDA TTFS activation (Triton) failed ({_failure}); "
                  "using the PyTorch reference, which gives the same results more slowly. Set "
                  "TTFS_FUSED=0 to choose it silently.", RuntimeWarning, stacklevel=4)


_kernels = None


def _compiled():
    """Import the Triton kernels on first use (importing Triton costs ~0.3 s)."""
    global _kernels
    if _kernels is not None:
        return _kernels
    import triton

    from . import _triton_kernels as k

    _kernels = (triton, k.forward_kernel, k.backward_kernel)
    return _kernels


def forward(z: Tensor, thresholds: Tensor, kernel: Tensor) -> tuple[Tensor, Tensor]:
    triton, forward_kernel, _ = _compiled()
    z = z.contiguous()
    T = thresholds.numel()
    x = torch.empty_like(z)
    t = torch.empty(z.shape, dtype=spike_time_dtype(T), device=z.device)
    n = z.numel()
    if n:
        forward_kernel[(triton.cdiv(n, BLOCK),)](z, thresholds.contiguous(), kernel.contiguous(),
                                                 x, t, n, T, BLOCK=BLOCK)
    return x, t


def backward(grad_x: Tensor, z: Tensor | None, t: Tensor, kernel: Tensor, theta0: float,
             ste: bool, need_z: bool) -> tuple[Tensor, Tensor]:
    triton, _, backward_kernel = _compiled()
    g = grad_x.contiguous()
    n = g.numel()
    grad_z = torch.empty_like(g) if need_z else g.new_empty(0)
    blocks = max(1, triton.cdiv(n, BLOCK))
    block_sums = torch.zeros(blocks, 4, dtype=torch.float64, device=g.device)
    if n:
        zc = z.contiguous() if z is not None else g
        backward_kernel[(blocks,)](g, zc, t.contiguous(), kernel.contiguous(),
                                   grad_z if need_z else g, block_sums,
                                   torch.tensor([float(theta0)], dtype=torch.float64,
                                                device=g.device),
                                   n, kernel.numel() - 1, STE=ste, NEED_Z=need_z, BLOCK=BLOCK)
    return grad_z, block_sums.sum(0)
