"""The TB proxy of each mode on the same network (how lambda_TB in one mode maps to another).

    python -m benchmarks.tb_modes [--checkpoint runs/demo/checkpoint.pt]

Prints ``L_TB`` of ``exact``, ``taylor`` and ``authors`` (per channel, and per neuron) for
VGG-16 at initialisation (seed 0) and, if given, a trained checkpoint, and the ratio
``exact / authors``: a ``lambda_TB`` of the authors' mode weighs the loss like ``ratio`` times
that ``lambda_TB`` in the exact mode, at that state of that network (the ratio moves with
gamma and beta during training, and the gradients differ in form).
"""

from __future__ import annotations

import argparse

import torch


def proxies(net) -> dict[str, float]:
    from ttfs_plugin.training.losses import spike_proxy_loss

    out = {mode: spike_proxy_loss(net, mode).item() for mode in ("exact", "taylor", "authors")}
    out["authors (per neuron)"] = spike_proxy_loss(net, "authors", "neuron").item()
    return out


def main(argv: list[str] | None = None) -> int:
    from ttfs_plugin.checkpoint import load_checkpoint
    from ttfs_plugin.models import vgg16

    parser = argparse.ArgumentParser(prog="python -m benchmarks.tb_modes")
    parser.add_argument("--checkpoint", help="a trained checkpoint (or run folder) to add")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    nets = {"VGG-16 (width 1) at initialisation": vgg16()}
    if args.checkpoint:
        nets[args.checkpoint], _ = load_checkpoint(args.checkpoint)
    print("| network | exact | taylor | authors | authors (per neuron) | exact / authors |")
    print("|---|---|---|---|---|---|")
    for label, net in nets.items():
        net.eval()
        with torch.no_grad():
            net(torch.rand(2, *net.config.in_shape))  # positions per channel
        p = proxies(net)
        print(f"| {label} | {p['exact']:.4g} | {p['taylor']:.4g} | {p['authors']:.4g} | "
              f"{p['authors (per neuron)']:.4g} | {p['exact'] / p['authors']:.3g} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
