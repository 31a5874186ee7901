"""The input gradient of a few-channel first convolution: oneDNN vs GEMM + col2im.

    python -m benchmarks.conv_input_grad [--threads 1] [--batch 128] [--repeats 10]

Why ``ttfs_plugin.conv.Conv2d`` computes ``dL/dx`` of a one-to-three-channel input as
``col2im(W^T · dL/dy)``: the surrogate's input encoder has a trainable kernel, so conv1 needs its
input gradient, and oneDNN's backward-data is slow for so few input channels. Prints one row per
first-layer shape: ms (best of ``--repeats``, thread time) and the ratio.
"""

from __future__ import annotations

import argparse
import time

import torch

from ttfs_plugin.conv import gemm_input_grad

from .common import best_time

#: (input channels, output channels, height = width, kernel): MNIST, N-MNIST, CIFAR VGG-16 at
#: widths 1/4 and 1 first layers.
SHAPES = [(1, 32, 28, 3), (1, 32, 28, 5), (2, 32, 34, 3), (3, 16, 32, 3), (3, 64, 32, 3)]


def row(cin: int, cout: int, size: int, k: int, batch: int, repeats: int) -> str:
    """One table row: both input gradients of one shape, checked equal, then timed."""
    torch.manual_seed(0)
    x = torch.rand(batch, cin, size, size)
    w = torch.randn(cout, cin, k, k)
    grad_y = torch.randn(batch, cout, size, size)
    stride, padding = (1, 1), (k // 2, k // 2)

    def onednn():
        return torch.ops.aten.convolution_backward(grad_y, x, w, None, list(stride),
                                                   list(padding), [1, 1], False, [0, 0], 1,
                                                   [True, False, False])[0]

    def gemm():
        return gemm_input_grad(grad_y, w, (size, size), stride, padding)

    torch.testing.assert_close(gemm(), onednn(), rtol=1e-4, atol=1e-4)
    a, b = (1e3 * best_time(f, repeats, clock=time.thread_time) for f in (onednn, gemm))
    return f"| {cin}→{cout} | {size}×{size} | {k}×{k} | {a:.2f} | {b:.2f} | {a / b:.2f}× |"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10)
    opts = parser.parse_args(argv)
    torch.set_num_threads(opts.threads)
    print(f"torch {torch.__version__}, {opts.threads} thread(s), batch {opts.batch}")
    print("| in→out channels | size | kernel | oneDNN dL/dx (ms) | GEMM + col2im (ms) | ratio |")
    print("|---|---|---|---|---|---|")
    for shape in SHAPES:
        print(row(*shape, batch=opts.batch, repeats=opts.repeats))


if __name__ == "__main__":
    main()
