"""The fused CPU kernel (``ttfs_activation.c``), built with the system C compiler at first use.

A ``pip install`` needs no compiler: the C file (plain C99, no torch headers) is compiled once
into ``$TTFS_KERNEL_DIR`` (default ``~/.cache/ttfs-plugin/kernels``), named by a hash of the
source and the compiler command, and loaded with :mod:`ctypes`. With no compiler, or a failed
build, :func:`library` returns ``None`` and the activation runs the PyTorch reference (one
warning says why). Work is split over ``torch.get_num_threads()`` threads in whole blocks, and
block sums are added in a fixed order, so results do not depend on the thread count.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch import Tensor

from .reference import spike_time_dtype

SOURCE = Path(__file__).with_name("ttfs_activation.c")
#: Environment variable naming the folder built kernels are kept in.
KERNEL_DIR_ENV = "TTFS_KERNEL_DIR"
_FLAGS = ["-O3", "-std=c99", "-ffp-contract=fast", "-fPIC", "-shared", "-Wno-psabi"]

_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_tried = False
_failure: str | None = None
_pool: ThreadPoolExecutor | None = None

_SUFFIX = {(torch.float32, torch.uint8): "f32_u8", (torch.float32, torch.int32): "f32_i32",
           (torch.float64, torch.uint8): "f64_u8", (torch.float64, torch.int32): "f64_i32"}
SUPPORTED_DTYPES = (torch.float32, torch.float64)


def kernel_dir() -> Path:
    """``$TTFS_KERNEL_DIR``, else ``$XDG_CACHE_HOME/ttfs-plugin/kernels`` (``~/.cache/...``)."""
    explicit = os.environ.get(KERNEL_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "ttfs-plugin" / "kernels"


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    return None


def build(path: Path = SOURCE, flags: list[str] = _FLAGS) -> Path:
    """The shared library built from the C file ``path`` with ``flags`` (kept, named by a hash
    of both and the compiler, in :func:`kernel_dir`; built there once)."""
    compiler = _compiler()
    if compiler is None:
        raise RuntimeError("no C compiler found (set $CC, or install gcc or clang)")
    source = path.read_bytes()
    key = hashlib.sha256(source + " ".join([compiler, *flags, platform.machine()]).encode())
    target = kernel_dir() / f"{path.stem}_{key.hexdigest()[:16]}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename: a concurrent process never loads half a file.
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        done = subprocess.run([compiler, *flags, str(path), "-o", tmp, "-lm"],
                              capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{compiler} failed: {done.stderr.strip()[-400:]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _declare(lib: ctypes.CDLL) -> None:
    p, i64, i32, f64 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32, ctypes.c_double
    for suffix in _SUFFIX.values():
        getattr(lib, f"ttfs_forward_{suffix}").argtypes = [p, i64, i64, p, p, i32, p, p]
        getattr(lib, f"ttfs_forward_{suffix}").restype = None
        getattr(lib, f"ttfs_backward_{suffix}").argtypes = [p, p, p, i64, i64, p, i32, f64, i32,
                                                            i32, p, p]
        getattr(lib, f"ttfs_backward_{suffix}").restype = None
    lib.ttfs_block_size.restype = i32
    lib.ttfs_forward_buckets_f32.argtypes = [p, i32]
    lib.ttfs_forward_buckets_f32.restype = i32
    if hasattr(lib, "ttfs_allow_avx2"):  # x86-64 only
        lib.ttfs_allow_avx2.argtypes = [i32]
        lib.ttfs_allow_avx2.restype = None


def library() -> ctypes.CDLL | None:
    """The loaded kernel library, building it on first call; ``None`` if it cannot be built."""
    global _library, _tried, _failure
    if _tried:
        return _library
    with _lock:
        if not _tried:
            try:
                lib = ctypes.CDLL(str(build()))
                _declare(lib)
                _library = lib
            except (OSError, RuntimeError, subprocess.SubprocessError) as error:
                _failure = str(error)
                warnings.warn(f"ttfs_plugin: the fused CPU TTFS activation could not be built "
                              f"({_failure}); using the PyTorch reference, which gives the same "
                              f"results more slowly. Set TTFS_FUSED=0 to choose it silently.",
                              RuntimeWarning, stacklevel=3)
            _tried = True
    return _library


def failure() -> str | None:
    """Why the library could not be built (``None``: it was, or was not tried yet)."""
    return _failure


def supports(z: Tensor) -> bool:
    return z.device.type == "cpu" and z.dtype in SUPPORTED_DTYPES and library() is not None


def ranges(n: int, block: int) -> list[tuple[int, int]]:
    """Whole blocks shared over the torch thread count (one range for small tensors)."""
    blocks = -(-n // block)
    if blocks == 0:
        return []  # an empty tensor: nothing to do
    threads = max(1, min(torch.get_num_threads(), blocks))
    per = -(-blocks // threads)
    return [(b * block, min(n, (b + per) * block)) for b in range(0, blocks, per)]


def _forget_pool() -> None:
    """In a forked child the pool's threads are gone: start a new pool there when needed."""
    global _pool
    _pool = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def run_calls(calls) -> None:
    """Run the zero-argument ``calls`` on the kernel thread pool (in this thread if one)."""
    global _pool
    if len(calls) <= 1:
        for call in calls:
            call()
        return
    if _pool is None:
        _pool = ThreadPoolExecutor(thread_name_prefix="ttfs-kernel")
    for future in [_pool.submit(call) for call in calls]:
        future.result()  # ctypes releases the GIL while each runs


def forward(z: Tensor, thresholds: Tensor, kernel: Tensor) -> tuple[Tensor, Tensor]:
    lib = library()
    assert lib is not None
    z = z.contiguous()
    T = thresholds.numel()
    x = torch.empty_like(z)
    t = torch.empty(z.shape, dtype=spike_time_dtype(T), device=z.device)
    thr, kern = thresholds.contiguous(), kernel.contiguous()
    fn = getattr(lib, f"ttfs_forward_{_SUFFIX[(z.dtype, t.dtype)]}")
    args = (z.data_ptr(), thr.data_ptr(), kern.data_ptr(), x.data_ptr(), t.data_ptr())
    run_calls([lambda b=b, e=e: fn(args[0], b, e, args[1], args[2], T, args[3], args[4])
               for b, e in ranges(z.numel(), lib.ttfs_block_size())])
    return x, t


def uses_buckets(thresholds: Tensor) -> bool:
    """Whether the float32 forward serves ``thresholds`` with its bucket table (two table reads
    per neuron) rather than by comparing with every threshold (same results, slower)."""
    lib = library()
    assert lib is not None
    thr = thresholds.to(torch.float32).contiguous()
    return bool(lib.ttfs_forward_buckets_f32(thr.data_ptr(), thr.numel()))


@contextlib.contextmanager
def portable_loops() -> Iterator[None]:
    """Inside the block, the kernel runs its portable loops (as on a CPU without AVX2), not the
    AVX2 ones: for tests that both give the same values."""
    lib = library()
    assert lib is not None
    if not hasattr(lib, "ttfs_allow_avx2"):
        yield
        return
    lib.ttfs_allow_avx2(0)
    try:
        yield
    finally:
        lib.ttfs_allow_avx2(1)


def backward(grad_x: Tensor, z: Tensor | None, t: Tensor, kernel: Tensor, theta0: float,
             ste: bool, need_z: bool) -> tuple[Tensor, Tensor]:
    lib = library()
    assert lib is not None
    g = grad_x.contiguous()
    zc = z.contiguous() if z is not None else g  # decode mode never reads z
    tc, kern = t.contiguous(), kernel.contiguous()
    block = lib.ttfs_block_size()
    n = g.numel()
    grad_z = torch.empty_like(g) if need_z else g.new_empty(0)
    block_sums = torch.zeros(max(1, -(-n // block)), 4, dtype=torch.float64, device=g.device)
    fn = getattr(lib, f"ttfs_backward_{_SUFFIX[(g.dtype, tc.dtype)]}")
    ptrs = (g.data_ptr(), zc.data_ptr(), tc.data_ptr(), kern.data_ptr(),
            grad_z.data_ptr() if need_z else None, block_sums.data_ptr())
    T = kern.numel() - 1
    run_calls([lambda b=b, e=e: fn(ptrs[0], ptrs[1], ptrs[2], b, e, ptrs[3], T, float(theta0),
                                   int(ste), int(need_z), ptrs[4], ptrs[5])
               for b, e in ranges(n, block)])
    return grad_z, block_sums.sum(0)
