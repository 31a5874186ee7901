"""``Conv2d``: ``nn.Conv2d`` with a fast input gradient for inputs of one to three channels.

A surrogate network's first convolution reads the input encoder's spike values, and the
encoder's trainable kernel (``tau``, ``td``; SPEC §3) needs their gradient: conv1's input
gradient, which a ReLU twin (whose input needs none) never computes. On CPU, oneDNN's
backward-data for a one-to-three-channel input is up to 6× slower than the same product written
as one GEMM and a col2im, ``dL/dx = col2im(W^T · dL/dy)`` (1.7–6.7× for MNIST, N-MNIST and
VGG-16 first layers; ``python -m benchmarks.conv_input_grad`` prints
the table). This class takes that route for such inputs and
is ``nn.Conv2d`` everywhere else: same parameters, state dict and forward (the forward is
``F.conv2d`` itself, so outputs are bit for bit those of ``nn.Conv2d``); only the rounding of
the input gradient differs (another order of the same sums).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Up to this many input channels the input gradient is a GEMM + col2im on CPU.
GEMM_INPUT_GRAD_MAX_CHANNELS = 3


def gemm_input_grad(grad_y: Tensor, weight: Tensor, input_size: tuple[int, int],
                    stride: tuple[int, ...], padding: tuple[int, ...]) -> Tensor:
    """``dL/dx`` of ``y = conv2d(x, W)`` (one group, no dilation): the columns ``W^T · dL/dy``
    (one batched GEMM), each kernel tap's column added into a zero-padded map at its offset
    (col2im as ``kh·kw`` strided adds, cheaper than ``F.fold`` here), the padding cropped."""
    n, out_channels, out_h, out_w = grad_y.shape
    in_channels, kh, kw = weight.shape[1:]
    (sh, sw), (ph, pw), (h, w) = stride, padding, input_size
    columns = torch.bmm(weight.reshape(out_channels, -1).t().expand(n, -1, -1),
                        grad_y.reshape(n, out_channels, -1))
    columns = columns.view(n, in_channels, kh, kw, out_h, out_w)
    grad_x = grad_y.new_zeros(n, in_channels, h + 2 * ph, w + 2 * pw)
    for ky in range(kh):
        for kx in range(kw):
            grad_x[:, :, ky:ky + (out_h - 1) * sh + 1:sh,
                   kx:kx + (out_w - 1) * sw + 1:sw] += columns[:, :, ky, kx]
    return grad_x[:, :, ph:ph + h, pw:pw + w]


class _GemmInputGradConv2d(torch.autograd.Function):
    """``y = conv2d(x, W, b)``; backward: :func:`gemm_input_grad`, and ``dL/dW``, ``dL/db`` by
    ``aten.convolution_backward`` (as ``nn.Conv2d``)."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding):
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding, ctx.has_bias = stride, padding, bias is not None
        return F.conv2d(x, weight, bias, stride, padding)

    @staticmethod
    def backward(ctx, grad_y):
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad_x = grad_w = grad_b = None
        if need_w or (need_b and ctx.has_bias):
            _, grad_w, grad_b = torch.ops.aten.convolution_backward(
                grad_y, x, weight, [weight.shape[0]] if ctx.has_bias else None, ctx.stride,
                ctx.padding, [1, 1], False, [0, 0], 1,
                [False, bool(need_w), bool(need_b and ctx.has_bias)])
        if need_x:
            grad_x = gemm_input_grad(grad_y, weight, x.shape[-2:], ctx.stride, ctx.padding)
        return grad_x, grad_w, grad_b, None, None


def _under_functorch(x: Tensor) -> bool:
    """Inside ``torch.func.grad`` / ``vmap`` / ``jacrev`` (a wrapped tensor), where a plain
    ``autograd.Function`` is refused: there ``nn.Conv2d``'s own route is taken."""
    return bool(torch._C._functorch.is_functorch_wrapped_tensor(x))


def _cpu_autocast() -> bool:
    """CPU autocast is on (it runs conv2d in bf16: there ``nn.Conv2d``'s own route is taken)."""
    try:
        return bool(torch.is_autocast_enabled("cpu"))
    except TypeError:  # torch < 2.4
        return bool(torch.is_autocast_cpu_enabled())


class Conv2d(nn.Conv2d):
    """``nn.Conv2d``; on CPU, for a batched input of at most
    :data:`GEMM_INPUT_GRAD_MAX_CHANNELS` channels that needs a gradient, the input gradient is
    one GEMM + ``col2im`` (see the module docstring). Zero padding, no dilation, one group."""

    def _gemm_input_grad(self, x: Tensor) -> bool:
        return (x.requires_grad and torch.is_grad_enabled() and x.device.type == "cpu"
                and not _under_functorch(x) and not _cpu_autocast()
                and x.dim() == 4 and self.in_channels <= GEMM_INPUT_GRAD_MAX_CHANNELS
                and self.groups == 1 and self.padding_mode == "zeros"
                and not isinstance(self.padding, str) and tuple(self.dilation) == (1, 1))

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if self._gemm_input_grad(input):
            return _GemmInputGradConv2d.apply(input, weight, bias, self.stride, self.padding)
        return super()._conv_forward(input, weight, bias)
