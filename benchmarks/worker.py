"""One training method in a fresh process (so its peak memory is its own).

    python -m benchmarks.worker IN.json OUT.json

``IN.json`` holds ``method`` (``relu``, ``ttfs``, ``snntorch`` or ``norse``), ``epochs``,
``train_samples`` (``null`` = all 8,000), ``tiny`` and the method's settings (or a list of such
jobs); ``OUT.json`` gets accuracy, spikes, time steps, seconds per epoch and peak RSS.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from .common import load_mnist9k, peak_rss_mb, subset


def size_kwargs(p: dict) -> dict:
    """The small CNN's widths: the real ones, or narrow ones in the ``--tiny`` smoke setting."""
    return {"channels": tuple(p["channels"]), "hidden": p["hidden"]} if p.get("channels") else {}


def train_ours(p: dict, train, val) -> dict:
    from ttfs_plugin.metrics import evaluate
    from ttfs_plugin.models import small_cnn
    from ttfs_plugin.training import TrainConfig, batches, fit, seed_everything, td_for_x_max

    seed_everything(p.get("seed", 0))
    spiking = p["method"] == "ttfs"
    tau0 = p.get("tau0", 10.0)
    net = small_cnn(activation="ttfs" if spiking else "relu", T=p.get("T", 32), tau0=tau0,
                    td0=td_for_x_max(p.get("x_max0", 1.0), tau0), **size_kwargs(p))
    cfg = TrainConfig(epochs=p["epochs"], batch_size=p.get("batch_size", 128),
                      lr=p.get("lr", 1e-3), lambda_w=p.get("lambda_w", 1e-4),
                      lambda_tr=p.get("lambda_tr", 0.0) if spiking else 0.0,
                      lambda_tb=p.get("lambda_tb", 0.0) if spiking else 0.0,
                      sr_target=p.get("sr_target", 0) if spiking else 0,
                      reg_start=p.get("reg_start"), seed=p.get("seed", 0))
    history = fit(net, train, None, cfg, progress=False)
    result = evaluate(net, batches(val, 512))
    from .peers import accuracy_with_batch_stats  # fit() leaves relaxation at 0
    batch_stats = accuracy_with_batch_stats(net, val, 250,
                                            lambda out, y: int((out.argmax(1) == y).sum()))
    out = {"accuracy": result["accuracy"], "accuracy_batch_stats": batch_stats,
           "samples": result["samples"],
           "epoch_seconds": [h["epoch_seconds"] for h in history],
           "train_loss": [h["train_loss"] for h in history], "training": cfg.to_dict(),
           "train_samples": len(train)}
    if spiking:
        out.update({k: result[k] for k in ("spikes_per_sample", "neurons", "sparsity",
                                           "time_steps")})
        out["per_layer"] = [{k: layer[k] for k in ("name", "neurons", "spikes_per_sample")}
                            for layer in result["per_layer"]]
    return out


def run_job(p: dict) -> dict:
    if p.get("threads"):
        torch.set_num_threads(int(p["threads"]))
    train, val, source = load_mnist9k(synthetic_ok=p.get("tiny", False))
    train = subset(train, p.get("train_samples"))
    val = subset(val, p.get("val_samples"))
    if p["method"] in ("snntorch", "norse"):  # library imports count as start-up, not training
        __import__("snntorch.functional" if p["method"] == "snntorch" else "norse.torch")
    else:
        import ttfs_plugin.training  # noqa: F401
    rss_start = peak_rss_mb()
    start = time.perf_counter()
    if p["method"] in ("relu", "ttfs"):
        out = train_ours(p, train, val)
    else:
        from .peers import train_peer
        out = train_peer(p["method"], train, val, p["epochs"], p["num_steps"],
                         batch_size=p.get("batch_size", 128), lr=p.get("lr"),
                         seed=p.get("seed", 0), **size_kwargs(p))
    out.update({"method": p["method"], "data": source, "wall_seconds": time.perf_counter() - start,
                "peak_rss_mb": peak_rss_mb(), "rss_before_training_mb": rss_start,
                "torch_threads": torch.get_num_threads()})
    return out


def main(argv=None) -> None:
    """``IN.json`` holds one job (a dict) or a list of jobs run one after another (the smoke
    setting, where one process start-up for all is enough); ``OUT.json`` mirrors it."""
    argv = sys.argv[1:] if argv is None else argv
    jobs = json.loads(Path(argv[0]).read_text())
    out = [run_job(p) for p in jobs] if isinstance(jobs, list) else run_job(jobs)
    Path(argv[1]).write_text(json.dumps(out))


if __name__ == "__main__":
    main()
