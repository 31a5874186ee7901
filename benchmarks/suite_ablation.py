"""Suite ``ablation``: the paper's Table 1 on mnist9k with the small CNN.

SM (x_max = 2), +SR, +SR+TR, +SR+TR+TB at two TB weights; accuracy and spikes per sample over
``--seeds`` seeds (mean ± std), each run ``TrainConfig(...)`` + ``fit(...)`` on a reduced budget so
that 5 configurations × 3 seeds fit the suite's 15 minutes.
"""

from __future__ import annotations

import time

from .common import fmt, goal, load_mnist9k, mean_std, subset

COLUMNS = ["configuration", "x_max0", "SR target", "λ_TR", "λ_TB", "test accuracy (mean ± std)",
           "spikes/sample (mean ± std)", "spikes/neuron", "seeds", "s/run"]


def configurations(tb_weights: tuple[float, float], sr_target: int) -> list[tuple[str, dict]]:
    """The presets of ``ttfs_plugin.training.PRESETS``, with SR/TB set for the short budget."""
    from ttfs_plugin.training import get_preset
    out = []
    for name, tb in (("sm", None), ("sm+sr", None), ("sm+sr+tr", None),
                     ("sm+sr+tr+tb", tb_weights[0]), ("sm+sr+tr+tb", tb_weights[1])):
        p = get_preset(name).settings()
        if p["sr_target"] is None:  # the preset's "a quarter of the epochs"
            p["sr_target"] = sr_target
        if tb is not None:
            p["lambda_tb"] = tb
        label = name.upper().replace("SM+", "SM + ").replace("+", " + ").replace("  ", " ")
        out.append((label if tb is None else f"{label} (λ_TB {tb:g})", p))
    return out


def run(opts) -> dict:
    from ttfs_plugin.metrics import evaluate
    from ttfs_plugin.models import small_cnn
    from ttfs_plugin.training import TrainConfig, batches, fit, seed_everything, td_for_x_max

    tiny = opts.tiny
    epochs = 1 if tiny else (opts.epochs or 4)
    n_train = 64 if tiny else opts.ablation_train
    seeds = [0] if tiny else list(range(opts.seeds))
    sr_target = 2
    batch = 32 if tiny else opts.ablation_batch
    train, val, source = load_mnist9k(synthetic_ok=tiny)
    train = subset(train, n_train)
    val = subset(val, 32 if tiny else None)
    tau0 = 10.0
    raw, rows = [], []
    for label, p in configurations((1e-4, 1e-3), sr_target):
        runs = []
        for seed in seeds:
            seed_everything(seed)
            size = {"channels": (4, 8), "hidden": 16, "T": 8} if tiny else {}
            net = small_cnn(tau0=tau0, td0=td_for_x_max(p["x_max0"], tau0), **size)
            cfg = TrainConfig(epochs=epochs, batch_size=batch, lr=1e-3,
                              lambda_w=1e-4, lambda_tr=p["lambda_tr"], lambda_tb=p["lambda_tb"],
                              sr_target=p["sr_target"], reg_start=1, seed=seed)
            start = time.perf_counter()
            fit(net, train, None, cfg, progress=False)
            seconds = time.perf_counter() - start
            ev = evaluate(net, batches(val, 512))
            runs.append({"seed": seed, "accuracy": ev["accuracy"],
                         "spikes_per_sample": ev["spikes_per_sample"],
                         "sparsity": ev["sparsity"], "train_seconds": seconds})
        acc = mean_std([r["accuracy"] for r in runs])
        spk = mean_std([r["spikes_per_sample"] for r in runs])
        spn = mean_std([r["sparsity"] for r in runs])
        raw.append({"configuration": label, "preset": p, "runs": runs, "accuracy": acc,
                    "spikes_per_sample": spk, "sparsity": spn})
        rows.append([label, f"{p['x_max0']:g}", str(p["sr_target"] or "off"),
                     f"{p['lambda_tr']:g}", f"{p['lambda_tb']:g}",
                     f"{100 * acc[0]:.2f} ± {100 * acc[1]:.2f} %",
                     f"{fmt(spk[0], 0)} ± {fmt(spk[1], 0)}", f"{spn[0]:.3f}", str(len(runs)),
                     f"{sum(r['train_seconds'] for r in runs) / len(runs):.0f}"])

    sm, sr, tr, tb1, tb2 = raw
    goals = [
        goal("SR raises accuracy", "SM + SR > SM",
             f"{100 * sr['accuracy'][0]:.2f} % vs {100 * sm['accuracy'][0]:.2f} %",
             sr["accuracy"][0] > sm["accuracy"][0], _why_acc(sr, sm)),
        goal("TR raises accuracy", "SM + SR + TR > SM + SR",
             f"{100 * tr['accuracy'][0]:.2f} % vs {100 * sr['accuracy'][0]:.2f} %",
             tr["accuracy"][0] > sr["accuracy"][0], _why_acc(tr, sr)),
    ]
    for t in (tb1, tb2):
        drop = 100 * (tr["accuracy"][0] - t["accuracy"][0])
        cut = 1 - t["spikes_per_sample"][0] / tr["spikes_per_sample"][0]
        paired = [a["spikes_per_sample"] - b["spikes_per_sample"]
                  for a, b in zip(tr["runs"], t["runs"])]  # same seed: same init and data order
        every_seed = all(d > 0 for d in paired)
        ok = every_seed and drop < 1.0
        why = ([] if every_seed else ["TB did not cut spikes on every seed"]) + (
            [f"accuracy fell {drop:.2f} points"] if drop >= 1.0 else [])
        if ok and cut < 0.05:
            why.append("met, but the cut is marginal (< 5 %); likely cause: Adam moves each "
                       "batch-norm parameter by at most about the learning rate per update "
                       "whatever λ_TB, so a short run gives TB few steps to lower the firing "
                       "probabilities")
        weight = t["preset"]["lambda_tb"]
        goals.append(goal(f"TB cuts spikes at < 1 point of accuracy (λ_TB {weight:g})",
                          "spikes ↓ on every seed, Δacc < 1 pt",
                          f"spikes {-100 * cut:+.1f} % vs SM + SR + TR (paired per seed: "
                          + ", ".join(f"{-d:+,.0f}" for d in paired) + f"); accuracy "
                          f"{-drop:+.2f} points", ok, "; ".join(why)))
    notes = [
        f"Data: {source}; first {len(train):,} training images, validation = images "
        f"8,000–8,999 ({len(val):,}). Small CNN, T = 32, tau0 = 10, batch {batch} "
        f"({-(-len(train) // batch)} updates an epoch), Adam 1e-3 cosine, L2 1e-4, {epochs} "
        "epochs per run (reduced budget: 15 runs must fit ~15 minutes on 2 shared cores; the "
        "small batch buys more updates for the same compute).",
        "Presets from `ttfs_plugin.training.PRESETS`: SM starts at x_max = 2 "
        "(td0 = tau0·ln 2) with SR/TR/TB off; the others at x_max = 1 (td0 = 0). "
        f"SR target epoch {sr_target}: p_relax = 0.5 in the first epoch, 0 after; TR and TB "
        "from the second epoch (reg_start = 1). λ_TR 1e-4 (the presets'; the paper's Table 1: "
        "1e-5); λ_TB 1e-4 (paper) and 1e-3.",
        "The preset default SR target (a quarter of the epochs) would be epoch 1 for a "
        "4-epoch run, and `relaxation_probability(0, 1) = 0`: SR would never relax anything. "
        "Hence the explicit target 2.",
        "Accuracy and spikes: `ttfs_plugin.metrics.evaluate` in eval mode (input encoder "
        "included); std over seeds " + ", ".join(str(s) for s in seeds) + ".",
        "With 3 seeds a difference smaller than about one standard deviation is within "
        "seed-to-seed noise; the SR and TR goals compare means, the TB goals compare spikes "
        "seed by seed (same seed = same initialisation and data order).",
    ]
    if tiny:
        notes.insert(0, "**Tiny smoke setting (`--tiny`): numbers are meaningless.**")
    return {"title": "3. Ablation (paper's Table 1) on mnist9k, small CNN",
            "columns": COLUMNS, "rows": rows, "goals": goals, "notes": notes,
            "raw": {"epochs": epochs, "train_samples": len(train), "seeds": seeds,
                    "configurations": raw}}


def _why_acc(new: dict, old: dict) -> str:
    if new["accuracy"][0] > old["accuracy"][0]:
        return ""
    gap = 100 * (old["accuracy"][0] - new["accuracy"][0])
    noise = 100 * max(new["accuracy"][1], old["accuracy"][1])
    return (f"{gap:.2f} points lower, within the seed std ({noise:.2f})" if gap <= noise
            else f"{gap:.2f} points lower, more than the seed std ({noise:.2f})")
