"""The Triton kernels of :mod:`ttfs_plugin.ops.cuda` (imported only when a CUDA tensor, or
the interpreter test, needs them: importing Triton takes a while). Formulas: see ``cuda.py``."""

import triton
import triton.language as tl


@triton.jit
def ieee_div(a, b):
    if a.dtype == tl.float32:
        return tl.math.div_rn(a, b)
    else:
        return a / b  # float64 division is round-to-nearest already


@triton.jit
def forward_kernel(z_ptr, thr_ptr, kern_ptr, x_ptr, t_ptr, n, T, BLOCK: tl.constexpr):
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = offsets < n
    z = tl.load(z_ptr + offsets, mask=inside, other=0.0)
    count = tl.zeros([BLOCK], dtype=tl.int32)
    for k in range(0, T):
        count += (z >= tl.load(thr_ptr + k)).to(tl.int32)  # NaN: never counted
    t = T - count
    tl.store(x_ptr + offsets, tl.load(kern_ptr + t, mask=inside, other=0.0), mask=inside)
    tl.store(t_ptr + offsets, t.to(t_ptr.dtype.element_ty), mask=inside)


@triton.jit
def backward_kernel(g_ptr, z_ptr, t_ptr, kern_ptr, grad_z_ptr, sums_ptr, theta0_ptr, n, T,
                    STE: tl.constexpr, NEED_Z: tl.constexpr, BLOCK: tl.constexpr):
    # theta0 comes as a float64 tensor: a Python float argument would be cut to float32
    theta0 = tl.load(theta0_ptr)
    block = tl.program_id(0)
    offsets = block.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = offsets < n
    g = tl.load(g_ptr + offsets, mask=inside, other=0.0)
    t = tl.load(t_ptr + offsets, mask=inside, other=0).to(tl.int32)
    gx = g * tl.load(kern_ptr + t, mask=inside, other=0.0)
    quantized = (t >= 1) & (t <= T - 1) & inside
    zero = tl.zeros_like(gx)
    if STE:
        z = tl.load(z_ptr + offsets, mask=inside, other=1.0)
        if NEED_Z:
            tl.store(grad_z_ptr + offsets, tl.where(quantized, ieee_div(gx, z), zero),
                     mask=inside)
        safe_z = tl.where(quantized, z.to(tl.float64), theta0)
        log_z = tl.log(safe_z / theta0)
    else:
        if NEED_Z:
            grad = tl.where(quantized, ieee_div(g, theta0.to(g.dtype)), zero)
            tl.store(grad_z_ptr + offsets, grad, mask=inside)
        log_z = tl.zeros([BLOCK], dtype=tl.float64)
    gx64 = gx.to(tl.float64)
    gx_q = tl.where(quantized, gx64, 0.0)
    tl.store(sums_ptr + block * 4 + 0, tl.sum(gx64, axis=0))
    tl.store(sums_ptr + block * 4 + 1, tl.sum(gx_q, axis=0))
    tl.store(sums_ptr + block * 4 + 2, tl.sum(gx_q * t.to(tl.float64), axis=0))
    tl.store(sums_ptr + block * 4 + 3, tl.sum(gx_q * log_z, axis=0))
