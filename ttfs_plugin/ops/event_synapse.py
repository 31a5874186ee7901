"""Event-driven weight ops of the time-stepped synapses (``event_synapse.c``), on the CPU.

A synapse's ``Conv2d`` or ``Linear`` on a spike tensor touches one weight row per spike instead
of running a dense op per time step. Every output element is the sum over the non-zero inputs
in one fixed order (input channel, kernel row, kernel column; one rounded product and add at a
time), so a sample's current depends on that sample alone: the per-step loop
(:func:`step_current`, one call per step) and the window schedule (:func:`add_window`, one call
per fire window, straight into the target's membrane) give the same bits, for any batch size
or thread count. A dense op sums in the order its kernel picks, which changes with the batch
shape: hence its own order here, used wherever :func:`event_op` applies, by both.

:func:`event_op` applies under ``torch.no_grad()`` (a dense op keeps autograd), on the CPU, for
float32/float64 of the weight's dtype, outside autocast, with the fused kernels on
(``TTFS_FUSED=0`` or ``ops.use_backend("reference")`` give the dense op), with no forward hook
on the op or globally (a hook sees the dense op's calls), and for an op that is a ``Conv2d``
with zero padding or a ``Linear`` (each optionally after ``Flatten`` of dimension 1 onwards,
``Identity`` or ``Dropout`` in eval mode). Built at first use like the fused activation; with
no compiler the dense op runs, with the same results up to float summation order.
"""

from __future__ import annotations

import ctypes
import subprocess
import threading
import warnings
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn.modules import module as _module_globals

from ..conv import Conv2d as _PluginConv2d
from ..conv import _cpu_autocast
from . import _plain_eager, _preferred, cpu

SOURCE = Path(__file__).with_name("event_synapse.c")
# no fused multiply-add: the rounding of every product and add is the result's definition
_FLAGS = ["-O3", "-std=c99", "-ffp-contract=off", "-fno-fast-math", "-fPIC", "-shared",
          "-Wno-psabi"]
_REALS = {torch.float32: "f32", torch.float64: "f64"}
_TIMES = {torch.uint8: "u8", torch.int32: "i32"}
#: The op classes run here (exact types: a subclass may compute something else). The plugin's
#: own Conv2d differs from nn.Conv2d only in its input gradient.
_CONVS = (nn.Conv2d, _PluginConv2d)

_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_tried = False


class _Geometry(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int64) for name in
                ("ci", "h", "w", "co", "groups", "kh", "kw", "sh", "sw", "ph", "pw", "dh", "dw",
                 "oh", "ow")]


def library() -> ctypes.CDLL | None:
    """The loaded library, built on first call; ``None`` where it cannot be (one warning)."""
    global _library, _tried
    if _tried:
        return _library
    with _lock:
        if not _tried:
            try:
                lib = ctypes.CDLL(str(cpu.build(SOURCE, _FLAGS)))
                p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32
                for real in _REALS.values():
                    getattr(lib, f"ev_step_{real}").argtypes = [p, p, p, i64, i64, p]
                    getattr(lib, f"ev_step_{real}").restype = ctypes.c_int
                    for time in _TIMES.values():
                        fn = getattr(lib, f"ev_window_{real}_{time}")
                        fn.argtypes = [p, i32, p, p, p, p, i64, i64, p]
                        fn.restype = ctypes.c_int
                lib.ev_geometry_size.restype = i64
                if lib.ev_geometry_size() != ctypes.sizeof(_Geometry):
                    raise RuntimeError("event_synapse.c and its Python side disagree on layout")
                _library = lib
            except (OSError, RuntimeError, subprocess.SubprocessError) as error:
                warnings.warn(f"ttfs_plugin: the event-driven synapse kernel could not be built "
                              f"({error}); synapses run their dense weight ops (the same "
                              f"results up to float summation order, more slowly).",
                              RuntimeWarning, stacklevel=3)
            _tried = True
    return _library


class EventOp(NamedTuple):
    """A synapse op the kernel can run: its weight (``Conv2d``: ``(Co, Ci/G, KH, KW)``;
    ``Linear``: ``(out, in)``), the ``Conv2d`` (its stride, padding, dilation, groups; ``None``
    for a ``Linear``) and whether a ``Flatten`` comes first."""

    weight: Tensor
    conv: nn.Conv2d | None
    flatten: bool

    def geometry(self, shape: tuple[int, ...]) -> _Geometry | None:
        """The kernel's geometry for an input of ``shape`` (``None``: not this op's input)."""
        if self.conv is None:
            if len(shape) < 2 or (len(shape) != 2 and not self.flatten):
                return None
            features = 1
            for size in shape[1:]:
                features *= size
            out, inputs = self.weight.shape
            if features != inputs:
                return None
            return _Geometry(inputs, 1, 1, out, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1)
        conv = self.conv
        if len(shape) != 4 or shape[1] != conv.in_channels:
            return None
        _, ci, h, w = shape
        kh, kw = conv.kernel_size
        sh, sw = conv.stride
        ph, pw = (int(p) for p in conv.padding)  # not a string: event_op checked
        dh, dw = conv.dilation
        oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        if oh <= 0 or ow <= 0:
            return None
        return _Geometry(ci, h, w, conv.out_channels, conv.groups, kh, kw, sh, sw, ph, pw, dh,
                         dw, oh, ow)

    def rearranged(self) -> Tensor:
        """The weight as the kernel reads it: ``(Ci/G, KH, KW, Co)`` (``Linear``: ``(in,
        out)``), contiguous."""
        weight = self.weight.detach()
        if self.conv is None:
            return weight.t().contiguous()
        return weight.permute(1, 2, 3, 0).contiguous()


def has_forward_hooks(module: nn.Module) -> bool:
    """Whether ``module`` itself has a forward hook or pre-hook."""
    return bool(module._forward_hooks or module._forward_pre_hooks
                or getattr(module, "_forward_hooks_with_kwargs", None))


def global_forward_hooks() -> bool:
    """Whether a global module forward hook or pre-hook is set (it sees every module call)."""
    return bool(_module_globals._global_forward_hooks
                or _module_globals._global_forward_pre_hooks)


def _weight_part(op: nn.Module) -> nn.Conv2d | nn.Linear | None:
    parts = list(op) if type(op) is nn.Sequential else [op]
    if has_forward_hooks(op):
        return None
    weight: nn.Conv2d | nn.Linear | None = None
    for part in parts:
        if has_forward_hooks(part):
            return None
        if type(part) is nn.Identity or (type(part) is nn.Dropout and not part.training):
            continue
        if type(part) is nn.Flatten and weight is None and part.start_dim == 1 \
                and part.end_dim == -1:
            continue
        if weight is None and (type(part) in _CONVS or type(part) is nn.Linear):
            weight = part  # type: ignore[assignment]
            continue
        return None
    if weight is None or weight.bias is not None:
        return None
    if isinstance(weight, nn.Conv2d) and (weight.padding_mode != "zeros"
                                          or isinstance(weight.padding, str)
                                          or any(type(p) is nn.Flatten for p in parts)):
        return None
    return weight


def event_op(op: nn.Module, x: Tensor) -> EventOp | None:
    """How the kernel runs ``op`` on ``x``, or ``None`` where ``op(x)`` must run (see the
    module's docstring for when that is)."""
    if (torch.is_grad_enabled() or x.device.type != "cpu" or x.dtype not in _REALS
            or _cpu_autocast() or _preferred() != "fused" or global_forward_hooks()):
        return None
    part = _weight_part(op)
    if part is None or part.weight.dtype != x.dtype or part.weight.device.type != "cpu":
        return None
    if library() is None:
        return None
    flatten = type(op) is nn.Sequential and any(type(p) is nn.Flatten for p in op)
    return EventOp(part.weight, part if isinstance(part, nn.Conv2d) else None, flatten)


def weight_op(op: nn.Module, x: Tensor) -> Tensor:
    """``op(x)``: by the event-driven kernel where :func:`event_op` applies, else the op."""
    event = event_op(op, x)
    if event is not None:
        out = step_current(event, x)
        if out is not None:
            return out
    return op(x)


def _samples(batch: int) -> list[tuple[int, int]]:
    return cpu.ranges(batch, 1)


def step_current(event: EventOp, x: Tensor) -> Tensor | None:
    """``op(x)`` in the kernel's summation order (``None``: ``x`` is not this op's input)."""
    geometry = event.geometry(tuple(x.shape))
    if geometry is None:
        return None
    sizes = [int(getattr(geometry, field[0])) for field in _Geometry._fields_]
    weight = event.rearranged()
    if _plain_eager(x) and _plain_eager(weight):
        return _step(x, weight, sizes, event.conv is not None)
    return event_step(x, weight, sizes, event.conv is not None)  # e.g. under torch.compile


def _step_shape(x: Tensor, sizes: list[int], conv: bool) -> tuple[int, ...]:
    geometry = _Geometry(*sizes)
    return (x.shape[0], geometry.co, geometry.oh, geometry.ow) if conv else \
        (x.shape[0], geometry.co)


def _step(x: Tensor, weight: Tensor, sizes: list[int], conv: bool) -> Tensor:
    lib = library()
    assert lib is not None
    x = x.contiguous()
    geometry = _Geometry(*sizes)
    out = torch.zeros(_step_shape(x, sizes, conv), dtype=x.dtype)
    fn = getattr(lib, f"ev_step_{_REALS[x.dtype]}")
    ptrs = (x.data_ptr(), weight.data_ptr(), ctypes.addressof(geometry), out.data_ptr())
    codes: list[int] = []
    cpu.run_calls([lambda b=b, e=e: codes.append(fn(ptrs[0], ptrs[1], ptrs[2], b, e, ptrs[3]))
                   for b, e in _samples(x.shape[0])])
    _check(codes)
    return out


@torch.library.custom_op("ttfs_plugin::event_step", mutates_args=())
def event_step(x: Tensor, weight: Tensor, sizes: list[int], conv: bool) -> Tensor:
    """:func:`step_current` as a custom op (weight rearranged, geometry as its 15 sizes): what
    ``torch.compile`` and other tracers see, opaque to them, so compiled code runs the same
    kernel as eager code."""
    return _step(x, weight, sizes, conv)


@event_step.register_fake
def _(x: Tensor, weight: Tensor, sizes: list[int], conv: bool) -> Tensor:
    return x.new_empty(_step_shape(x, sizes, conv))


def add_window(event: EventOp, times: Tensor, kernel: Tensor, bias: Tensor | None,
               mem: Tensor) -> bool:
    """A fire window of an exact synapse added into its target's membrane ``mem`` as the loop's
    steps add it: for ``k = 0 .. T-1``, ``mem = mem + (op(times == k) * kernel[k]`` (``+ bias``
    at ``k = 0``)). ``False`` (nothing done) where the kernel does not apply: the source's
    spike times of another type or shape, a non-finite ``kernel[k]``, or ``mem`` not of the
    op's output shape and dtype."""
    T = kernel.shape[0]
    geometry = event.geometry(tuple(times.shape))
    if (geometry is None or not _plain_eager(mem) or not _plain_eager(times)
            or times.dtype not in _TIMES or mem.dtype not in _REALS
            or mem.dtype != event.weight.dtype or not mem.is_contiguous()
            or mem.device.type != "cpu"):
        return False
    expected = (times.shape[0], geometry.co) if event.conv is None else \
        (times.shape[0], geometry.co, geometry.oh, geometry.ow)
    kappa = kernel.detach().to(mem.dtype).contiguous()
    if tuple(mem.shape) != expected or not bool(torch.isfinite(kappa).all()):
        return False
    lib = library()
    assert lib is not None
    times = times.contiguous()
    weight = event.rearranged()
    b = bias.detach().to(mem.dtype).contiguous() if bias is not None else None
    fn = getattr(lib, f"ev_window_{_REALS[mem.dtype]}_{_TIMES[times.dtype]}")
    ptrs = (times.data_ptr(), weight.data_ptr(), ctypes.addressof(geometry), kappa.data_ptr(),
            b.data_ptr() if b is not None else None, mem.data_ptr())
    codes: list[int] = []
    cpu.run_calls([lambda s=s, e=e: codes.append(fn(ptrs[0], T, ptrs[1], ptrs[2], ptrs[3],
                                                    ptrs[4], s, e, ptrs[5]))
                   for s, e in _samples(times.shape[0])])
    _check(codes)
    return True


def _check(codes: list[int]) -> None:
    if any(codes):
        raise MemoryError("the event-driven synapse kernel could not allocate its scratch "
                          "memory")
