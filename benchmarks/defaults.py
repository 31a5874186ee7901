"""The measurement behind two defaults: ``quantizer`` (ceil / round) and ``tb_mode``.

    python -m benchmarks.defaults [--seeds 2] [--epochs 3] [--train 4000] [--threads 1]

Prints two tables (markdown):

1. the decoded value's bias, ``mean((x - z)/z)`` over log-uniform quantised inputs, of each
   quantizer at several ``(tau, T)``;
2. the small CNN on mnist9k (first ``--train`` images; validation = images 8,000–8,999),
   SM + SR + TR + TB, for each quantizer (TB ``exact``) and each TB mode (``ceil``): accuracy
   and spikes per sample (mean ± std over seeds). The authors' TB term is on another scale, so
   its ``lambda_TB`` is the exact mode's times ``L_exact / L_authors`` of the freshly built
   network (``benchmarks.tb_modes``): the same pull at the start.
"""

from __future__ import annotations

import argparse
import time

import torch

from .common import load_mnist9k, mean_std, subset


def decoded_bias(tau: float, T: int, quantizer: str) -> float:
    from ttfs_plugin import functional as F

    z = torch.exp(torch.linspace(-(T - 2) / tau, -0.5 / tau, 100001, dtype=torch.float64))
    x = F.ttfs_activation(z, torch.tensor(tau, dtype=torch.float64),
                          torch.tensor(0.0, dtype=torch.float64), T, quantizer=quantizer)
    return ((x - z) / z).mean().item()


def train_once(train, val, seed: int, epochs: int, quantizer: str, tb_mode: str,
               lambda_tb: float) -> dict:
    from ttfs_plugin.metrics import evaluate
    from ttfs_plugin.models import small_cnn
    from ttfs_plugin.training import TrainConfig, batches, fit, seed_everything

    seed_everything(seed)
    net = small_cnn(quantizer=quantizer)
    cfg = TrainConfig(epochs=epochs, batch_size=64, lr=1e-3, lambda_w=1e-4, lambda_tr=1e-4,
                      lambda_tb=lambda_tb, tb_mode=tb_mode, sr_target=2, reg_start=1,
                      seed=seed)
    start = time.perf_counter()
    fit(net, train, None, cfg, progress=False)
    seconds = time.perf_counter() - start
    ev = evaluate(net, batches(val, 500), operations=False)
    return {"accuracy": ev["accuracy"], "spikes": ev["spikes_per_sample"], "seconds": seconds}


def authors_lambda(lambda_exact: float) -> float:
    """``lambda_exact · L_exact / L_authors`` on a fresh small CNN (seed 0)."""
    from ttfs_plugin.models import small_cnn
    from ttfs_plugin.training.losses import spike_proxy_loss

    torch.manual_seed(0)
    net = small_cnn().eval()
    with torch.no_grad():
        net(torch.rand(2, *net.config.in_shape))
        ratio = spike_proxy_loss(net, "exact").item() / spike_proxy_loss(net, "authors").item()
    return lambda_exact * ratio


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.defaults")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train", type=int, default=4000, help="training images")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    print("| tau | T | ceil: mean (x - z)/z | round: mean (x - z)/z |")
    print("|---|---|---|---|")
    for tau, T in ((10.0, 32), (5.0, 32), (2.0, 8), (10.0, 16)):
        print(f"| {tau:g} | {T} | {100 * decoded_bias(tau, T, 'ceil'):+.3f} % | "
              f"{100 * decoded_bias(tau, T, 'round'):+.3f} % |", flush=True)

    train, val, source = load_mnist9k()
    train = subset(train, args.train)
    lam = 1e-4
    rows = [("ceil", "exact", lam), ("round", "exact", lam), ("ceil", "taylor", lam),
            ("ceil", "authors", authors_lambda(lam))]
    print(f"\n{source}: {len(train)} training images, {len(val)} validation; small CNN, T 32, "
          f"SM + SR (target 2) + TR 1e-4 + TB, batch 64, Adam 1e-3 cosine, {args.epochs} "
          f"epochs, seeds 0–{args.seeds - 1}, {args.threads} thread(s)\n")
    print("| quantizer | tb_mode | λ_TB | accuracy | spikes/sample | s/run |")
    print("|---|---|---|---|---|---|")
    for quantizer, mode, weight in rows:
        runs = [train_once(train, val, s, args.epochs, quantizer, mode, weight)
                for s in range(args.seeds)]
        acc = mean_std([r["accuracy"] for r in runs])
        spk = mean_std([r["spikes"] for r in runs])
        per_seed = ", ".join(f"{100 * r['accuracy']:.2f}" for r in runs)
        print(f"| {quantizer} | {mode} | {weight:.3g} | {100 * acc[0]:.2f} ± {100 * acc[1]:.2f} "
              f"% ({per_seed}) | {spk[0]:,.0f} ± {spk[1]:,.0f} | "
              f"{sum(r['seconds'] for r in runs) / len(runs):.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
