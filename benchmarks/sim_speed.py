"""Time of one simulated batch over one surrogate forward pass of the same batch.

    python -m benchmarks.sim_speed [--batch 64] [--repeats 3] [--backends snntorch norse]

Goal (export issue): at most 1.5·T — a simulation cannot beat one weight op per time step of
each active layer, i.e. about T surrogate forward passes.
"""

from __future__ import annotations

import argparse
import importlib
import platform

import torch

from ttfs_plugin.models import small_cnn, vgg16

from .common import best_time

MODELS = {
    "small CNN (28×28)": (lambda: small_cnn(), (1, 28, 28)),
    "VGG-16 width 1/8 (32×32)": (lambda: vgg16(width=1 / 8), (3, 32, 32)),
}


@torch.no_grad()
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backends", nargs="+", default=["snntorch", "norse"])
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, batch {args.batch}, best of {args.repeats}")
    print("| model | backend | T | surrogate forward (ms) | simulated batch (ms) | ratio | "
          "goal 1.5·T | samples/s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, (build, shape) in MODELS.items():
        model = build().eval()
        x = torch.rand(args.batch, *shape)
        T = model.config.T
        model(x)  # warm-up
        surrogate = best_time(lambda m=model, x=x: m(x), args.repeats)
        for backend in args.backends:
            adapter = importlib.import_module(f"ttfs_plugin.{backend}")
            net = getattr(adapter, f"to_{backend}")(model)
            adapter.simulate(net, x)  # warm-up
            simulated = best_time(lambda a=adapter, n=net, x=x: a.simulate(n, x), args.repeats)
            ratio = simulated / surrogate
            print(f"| {name} | {backend} | {T} | {1e3 * surrogate:.1f} | {1e3 * simulated:.0f} | "
                  f"{ratio:.1f} | {'met' if ratio <= 1.5 * T else 'MISSED'} ({1.5 * T:.0f}) | "
                  f"{args.batch / simulated:.0f} |")


if __name__ == "__main__":
    main()
