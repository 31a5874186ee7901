"""Suite ``ablation-deep``: the paper's Table 1 on a deep net (VGG-16 at reduced width), with
per-layer gradients at every update.

    python -m benchmarks.run --suite ablation-deep --threads 1

The question: does the surrogate model (SM) started at ``x_max0 = 1`` without stochastic
relaxation (SR) lose its gradient in a deep network (the paper's argument for SR), and do SR
and TR raise accuracy and TB cut spikes there? Rows: SM at ``x_max0 = 1`` without SR (the extra
row), then the paper's five (SM at ``x_max0 = 2``; + SR; + SR + TR; + SR + TR + TB at two
weights), each for ``quantizer = "ceil"`` and ``"round"``, over ``--seeds`` seeds.

Network: ``vgg16(width=--deep-width, in_shape=(1, 32, 32))`` — input encoder + 13 conv + 2 FC =
16 spiking layers, batch norm in every hidden layer — on mnist9k zero-padded 28 → 32.

Gradient measurement: an optimizer step pre-hook (``Optimizer.register_step_pre_hook``, no change
to the library's trainer) reads every conv/linear weight's gradient before each Adam step and
records ``mean |dCE/dW|`` = ``mean |grad - 2·λ_w·W|`` (the L2 term's exact gradient taken out;
TR and TB act on kernels and batch norms, not on weights): at the first update, averaged per
epoch, and the updates in which no CE gradient reached the first conv. SR rows are measured as
they train (each layer relaxed, the ReLU path, with that epoch's ``p_relax``).

Budget (default options): width 1/8, 2,048 training images, batch 32 (64 updates an epoch),
12 epochs, SR target epoch 8 (p_relax falls from 7/8 to 0 over the first two thirds); 6 rows ×
3 seeds × 2 quantizers = 36 runs, about 50 s a run on one shared CPU thread. A first run with 6
epochs and SR target 3 (25 minutes) is summarised in docs/benchmarks.md: there every x_max0 = 1
net collapsed once relaxation stopped.
"""

from __future__ import annotations

import inspect
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from .common import fmt, goal, load_mnist9k, mean_std, subset

COLUMNS = ["quantizer", "configuration", "x_max0", "SR target", "λ_TR", "λ_TB",
           "test accuracy (mean ± std)", "spikes/sample (mean ± std)", "spikes/neuron",
           "∇ first conv, 1st update", "∇ first conv, epoch 1", "∇ middle conv, epoch 1",
           "∇ last hidden, epoch 1", "∇ first conv, last epoch",
           "updates with zero ∇ at first conv", "seeds", "s/run"]

TB_WEIGHTS = (1e-5, 1e-4)  # the paper's two TB rows (Table 1)
EXTRA_ROW = "SM x_max0=1 (no SR)"
#: mean |dCE/dW| below this counts as no gradient (an exact zero up to the L2 subtraction)
ZERO_GRAD = 1e-12
#: mean test accuracy below this (10 classes) is reported as chance level
CHANCE = 0.2


def configurations(tb_weights: tuple[float, float], sr_target: int) -> list[tuple[str, dict]]:
    """The extra row SM at x_max0 = 1 without SR, then the five rows of the small-CNN ablation
    (``suite_ablation.configurations``: the presets, SR target and TB weights set)."""
    from ttfs_plugin.training import get_preset

    from .suite_ablation import configurations as table1_rows

    sm1 = get_preset("sm").settings()
    sm1["x_max0"] = 1.0
    rows = table1_rows(tb_weights, sr_target)
    return [(EXTRA_ROW, sm1)] + [("SM x_max0=2 (no SR)" if label == "SM" else label, p)
                                 for label, p in rows]


def pad32(dataset: TensorDataset) -> TensorDataset:
    """28×28 images zero-padded to 32×32 (2 pixels each side); labels unchanged."""
    x, y = dataset.tensors
    return TensorDataset(F.pad(x, (2, 2, 2, 2)), y)


def supports_quantizer() -> bool:
    """Whether this checkout's network config has the ``quantizer`` setting (SPEC §3)."""
    from ttfs_plugin.models.spec import NetworkConfig
    return "quantizer" in inspect.signature(NetworkConfig).parameters


def build(width: float, tau0: float, td0: float, quantizer: str, tiny: bool) -> nn.Module:
    from ttfs_plugin.models import vgg16

    kernel = {"T": 8} if tiny else {}
    if quantizer != "ceil" or supports_quantizer():
        kernel["quantizer"] = quantizer
    try:
        return vgg16(in_shape=(1, 32, 32), width=width, tau0=tau0, td0=td0, **kernel)
    except TypeError as exc:
        if "quantizer" in str(exc):
            raise SystemExit(f"ablation-deep: this checkout's vgg16 takes no quantizer= yet "
                             f"({exc}); run with --quantizers ceil") from None
        raise


def weight_layers(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every conv/linear weight op in order (conv1 … conv13, fc14, fc15, output)."""
    return [(n, m) for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


class GradientProbe:
    """Mean ``|dCE/dW|`` of every weight op at every optimizer step (the L2 term's gradient
    ``2·λ_w·W`` subtracted; TR and TB have no weight gradient), kept as per-epoch sums."""

    def __init__(self, net: nn.Module, optimizer, lambda_w: float, steps_per_epoch: int) -> None:
        self.layers = weight_layers(net)
        self.lambda_w, self.steps_per_epoch = lambda_w, steps_per_epoch
        self.first: list[float] = []  # the first update
        self.sums: list[list[float]] = []  # per epoch, per layer
        self.zero: list[int] = []  # per epoch: updates with no CE gradient at the first layer
        self.count: list[int] = []
        self.step = 0
        self.handle = optimizer.register_step_pre_hook(self._hook)

    def _hook(self, optimizer, args, kwargs) -> None:
        epoch = self.step // self.steps_per_epoch
        self.step += 1
        row = []
        with torch.no_grad():
            for _, m in self.layers:
                g = m.weight.grad
                row.append(0.0 if g is None else
                           float((g - 2 * self.lambda_w * m.weight).abs().mean()))
        if not self.first:
            self.first = row
        while len(self.sums) <= epoch:
            self.sums.append([0.0] * len(row))
            self.zero.append(0)
            self.count.append(0)
        self.sums[epoch] = [a + b for a, b in zip(self.sums[epoch], row)]
        self.zero[epoch] += row[0] < ZERO_GRAD
        self.count[epoch] += 1

    def summary(self) -> dict:
        names = [n for n, _ in self.layers]
        return {"first_update": dict(zip(names, self.first)),
                "epoch_mean": [dict(zip(names, (v / c for v in s)))
                               for s, c in zip(self.sums, self.count)],
                "zero_updates": list(self.zero), "updates": list(self.count)}


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def run(opts) -> dict:
    from ttfs_plugin.metrics import evaluate
    from ttfs_plugin.training import TrainConfig, batches, seed_everything, td_for_x_max
    from ttfs_plugin.training.trainer import Trainer

    tiny = opts.tiny
    epochs = 1 if tiny else (opts.epochs or 12)
    # SR over the first two thirds: a first run with SR over half of 6 epochs (p_relax 2/3, 1/3,
    # then 0) let every x_max0 = 1 net collapse once relaxation stopped (docs/benchmarks.md)
    sr_target = max(2, 2 * epochs // 3)
    n_train = 64 if tiny else opts.deep_train
    seeds = [0] if tiny else list(range(opts.seeds))
    batch = 32 if tiny else opts.deep_batch
    width = 1 / 16 if tiny else opts.deep_width
    quantizers = [q.strip() for q in opts.quantizers.split(",") if q.strip()]
    skipped_quantizers = []
    if not supports_quantizer():
        skipped_quantizers = [q for q in quantizers if q != "ceil"]
        quantizers = [q for q in quantizers if q == "ceil"]
        if skipped_quantizers:
            print(f"[ablation-deep] NetworkConfig has no quantizer setting yet: running "
                  f"{quantizers or ['(none)']}, skipping {skipped_quantizers}", flush=True)
    if not quantizers:
        raise SystemExit("ablation-deep: no quantizer to run")
    train, val, source = load_mnist9k(synthetic_ok=tiny)
    train, val = pad32(subset(train, n_train)), pad32(subset(val, 32 if tiny else None))
    steps_per_epoch = -(-len(train) // batch)
    tau0, lambda_w = 10.0, 1e-4
    raw, rows, layer_rows, epoch_rows = [], [], [], []
    names: list[str] = []
    n_params = 0
    for quantizer in quantizers:
        for label, p in configurations(TB_WEIGHTS, sr_target):
            runs = []
            for seed in seeds:
                seed_everything(seed)
                net = build(width, tau0, td_for_x_max(p["x_max0"], tau0), quantizer, tiny)
                names = [n for n, _ in weight_layers(net)]
                n_params = sum(t.numel() for t in net.parameters())
                cfg = TrainConfig(epochs=epochs, batch_size=batch, lr=1e-3, lambda_w=lambda_w,
                                  lambda_tr=p["lambda_tr"], lambda_tb=p["lambda_tb"],
                                  sr_target=p["sr_target"], reg_start=1, seed=seed)
                trainer = Trainer(net, train, None, cfg, progress=False, log_epochs=False)
                trainer.prepare()
                probe = GradientProbe(net, trainer.optimizer, lambda_w, steps_per_epoch)
                start = time.perf_counter()
                history = trainer.fit()
                seconds = time.perf_counter() - start
                probe.handle.remove()
                ev = evaluate(net, batches(val, 512), operations=False)
                grads = probe.summary()
                runs.append({"seed": seed, "accuracy": ev["accuracy"],
                             "spikes_per_sample": ev["spikes_per_sample"],
                             "sparsity": ev["sparsity"], "train_seconds": seconds,
                             "gradients": grads,
                             "train_accuracy": [h["train_accuracy"] for h in history],
                             "train_loss": [h["train_loss"] for h in history],
                             "p_relax": [h["p_relax"] for h in history]})
                print(f"[ablation-deep] {quantizer} | {label} | seed {seed}: accuracy "
                      f"{100 * ev['accuracy']:.2f} %, spikes {ev['spikes_per_sample']:,.0f}, "
                      f"|grad| {names[0]} first update {grads['first_update'][names[0]]:.2e}, "
                      f"zero-grad updates {sum(grads['zero_updates'])}/"
                      f"{sum(grads['updates'])}, train {seconds:.0f} s", flush=True)
            raw.append(_aggregate(quantizer, label, p, runs, names))
            r = raw[-1]
            first, middle, last = names[0], names[(len(names) - 3) // 2], names[-2]
            rows.append([quantizer, label, f"{p['x_max0']:g}", str(p["sr_target"] or "off"),
                         f"{p['lambda_tr']:g}", f"{p['lambda_tb']:g}",
                         f"{100 * r['accuracy'][0]:.2f} ± {100 * r['accuracy'][1]:.2f} %",
                         f"{fmt(r['spikes_per_sample'][0], 0)} ± "
                         f"{fmt(r['spikes_per_sample'][1], 0)}", f"{r['sparsity'][0]:.3f}",
                         f"{r['first_update'][first]:.2e}", f"{r['epoch_mean'][0][first]:.2e}",
                         f"{r['epoch_mean'][0][middle]:.2e}", f"{r['epoch_mean'][0][last]:.2e}",
                         f"{r['epoch_mean'][-1][first]:.2e}",
                         f"{r['zero_updates']:.0f} / {r['updates']:.0f}", str(len(runs)),
                         f"{_mean([x['train_seconds'] for x in runs]):.0f}"])
            layer_rows.append([quantizer, label] + [f"{r['epoch_mean'][0][n]:.1e}"
                                                    for n in names])
            epoch_rows.append([quantizer, label] + [
                f"{m[first]:.1e} ({z:.0f})" for m, z in
                zip(r["epoch_mean"], r["zero_per_epoch"])])

    goals = []
    for quantizer in quantizers:
        goals += _goals([r for r in raw if r["quantizer"] == quantizer], quantizer, names[0])
    first, middle, last = names[0], names[(len(names) - 3) // 2], names[-2]
    notes = [
        f"Data: {source}; first {len(train):,} training images, validation = images "
        f"8,000–8,999 ({len(val):,}), zero-padded 28×28 → 32×32, one channel. "
        f"VGG-16 at width {_width_text(width)} (13 conv + 2 FC hidden layers with batch norm "
        f"+ input encoder = 16 spiking layers, {n_params:,} parameters), "
        f"T = {8 if tiny else 32}, tau0 = {tau0:g}, batch {batch} ({steps_per_epoch} updates "
        f"an epoch), Adam 1e-3 cosine, L2 {lambda_w:g}, {epochs} epochs per run. Reduced "
        f"budget: {len(raw)} configurations × {len(seeds)} seeds = {len(raw) * len(seeds)} "
        "runs must fit about 45 minutes on one shared CPU thread.",
        "Rows from `ttfs_plugin.training.PRESETS`: SM (SR, TR, TB off) at x_max0 = 1 "
        "(td0 = 0; the extra row) and at the preset's x_max0 = 2 (td0 = tau0·ln 2); the "
        f"others at x_max0 = 1 with SR target epoch {sr_target} (p_relax = "
        + ", ".join(f"{max(0.0, 1 - (e + 1) / sr_target):.2g}" for e in range(min(epochs, 4)))
        + (" …" if epochs > 4 else "") + " per epoch); TR (λ_TR 1e-4) and TB from the second "
        f"epoch (reg_start = 1). λ_TB {TB_WEIGHTS[0]:g} and {TB_WEIGHTS[1]:g} are the paper's "
        "two TB rows, unscaled: with 32×32 inputs every layer has the paper's VGG-16 positions "
        "per channel (n_c = H·W), so each batch-norm parameter gets the paper's TB gradient "
        "per unit λ_TB (the CE gradient it competes with is not the same).",
        "∇ = mean |dCE/dW| over a layer's weight (written ∇ in the tables), read by an "
        "optimizer step pre-hook before each Adam step (the L2 term's gradient 2·λ_w·W "
        "subtracted; TR/TB act on kernels and batch norms only, and are off in the first "
        "epoch), then averaged over the updates of an epoch and over seeds. SR rows are "
        "measured as they train (each layer relaxed with "
        f"that epoch's p_relax). First conv = {first}, middle conv = {middle}, last hidden = "
        f"{last}. 'zero ∇' = updates in which no CE gradient reached {first} "
        f"(∇ < {ZERO_GRAD:g}), summed over all epochs, mean over seeds. Every layer: the "
        "second table; per epoch: the third.",
        "Accuracy and spikes: `ttfs_plugin.metrics.evaluate` in eval mode (input encoder "
        "included, operations off); mean ± std over seeds " + ", ".join(map(str, seeds)) +
        "; same seed = same initial weights and data order in every row.",
    ]
    if skipped_quantizers:
        notes.insert(0, f"Quantizer(s) {', '.join(skipped_quantizers)} skipped: this checkout's "
                        "network config has no quantizer setting yet.")
    if tiny:
        notes.insert(0, "**Tiny smoke setting (`--tiny`): numbers are meaningless.**")
    return {"title": "3b. Ablation (paper's Table 1) on a deep net: VGG-16 at width "
                     f"{_width_text(width)}, mnist9k at 32×32, with gradients per layer",
            "columns": COLUMNS, "rows": rows, "goals": goals, "notes": notes,
            "tables": [
                {"title": "Mean |dCE/dW| per weight layer over the first epoch (mean over "
                          "seeds)", "columns": ["quantizer", "configuration"] + names,
                 "rows": layer_rows},
                {"title": f"Mean |dCE/dW| of {first} per epoch (in brackets: updates with "
                          f"zero ∇ at {first}, of {steps_per_epoch}; mean over seeds)",
                 "columns": ["quantizer", "configuration"] + [f"epoch {e + 1}"
                                                             for e in range(epochs)],
                 "rows": epoch_rows}],
            "raw": {"epochs": epochs, "sr_target": sr_target, "train_samples": len(train),
                    "batch": batch, "width": width, "seeds": seeds, "quantizers": quantizers,
                    "skipped_quantizers": skipped_quantizers, "layers": names,
                    "configurations": raw}}


def _aggregate(quantizer: str, label: str, preset: dict, runs: list[dict],
               names: list[str]) -> dict:
    grads = [r["gradients"] for r in runs]
    n_epochs = min(len(g["epoch_mean"]) for g in grads)
    return {"quantizer": quantizer, "configuration": label, "preset": preset, "runs": runs,
            "accuracy": mean_std([r["accuracy"] for r in runs]),
            "spikes_per_sample": mean_std([r["spikes_per_sample"] for r in runs]),
            "sparsity": mean_std([r["sparsity"] for r in runs]),
            "first_update": {n: _mean([g["first_update"][n] for g in grads]) for n in names},
            "epoch_mean": [{n: _mean([g["epoch_mean"][e][n] for g in grads]) for n in names}
                           for e in range(n_epochs)],
            "zero_per_epoch": [_mean([g["zero_updates"][e] for g in grads])
                               for e in range(n_epochs)],
            "zero_updates": _mean([sum(g["zero_updates"]) for g in grads]),
            "updates": _mean([sum(g["updates"]) for g in grads])}


def _width_text(width: float) -> str:
    inverse = 1 / width
    return f"1/{inverse:.0f}" if abs(inverse - round(inverse)) < 1e-9 else f"{width:g}"


def _goals(raw: list[dict], quantizer: str, first: str) -> list[dict]:
    sm1, sm2, sr, tr, tb1, tb2 = raw
    q = f" ({quantizer})"

    def kept(row: dict) -> list[float]:  # per seed: last epoch's ∇ / first update's
        return [g["epoch_mean"][-1][first] / g["first_update"][first]
                if g["first_update"][first] > 0 else 0.0
                for g in (r["gradients"] for r in row["runs"])]

    lost = kept(sm1)
    zeros_sr = [sum(r["gradients"]["zero_updates"]) for r in sr["runs"]]
    during = [sum(z for z, p in zip(r["gradients"]["zero_updates"], r["p_relax"]) if p > 0)
              for r in sr["runs"]]  # zero-gradient updates while SR relaxed layers
    sr_epochs = sum(p > 0 for p in sr["runs"][0]["p_relax"])
    why_sr = "" if all(z == 0 for z in zeros_sr) else (
        f"per seed {', '.join(map(str, during))} of them in the {sr_epochs} SR epoch"
        f"{'s' * (sr_epochs != 1)} (p_relax > 0), the rest after SR ends")
    out = [
        goal("SM at x_max0 = 1 without SR loses its gradient" + q,
             f"∇ {first} in the last epoch < 1 % of the first update's, every seed",
             "last / first: " + ", ".join(f"{v:.2g}" for v in lost) + " (SM x_max0=2: "
             + ", ".join(f"{v:.2g}" for v in kept(sm2)) + f"); zero-∇ updates "
             f"{sm1['zero_updates']:.0f} / {sm1['updates']:.0f} (x_max0=2: "
             f"{sm2['zero_updates']:.0f})", all(v < 0.01 for v in lost)),
        goal("SR keeps the gradient" + q, f"no zero-∇ update at {first} in SM + SR, every seed",
             "zero-∇ updates per seed: " + ", ".join(str(z) for z in zeros_sr)
             + f" of {sr['updates']:.0f}", all(z == 0 for z in zeros_sr), why_sr),
        goal("SR raises accuracy over SM at x_max0 = 1" + q, "SM + SR > SM x_max0=1",
             f"{100 * sr['accuracy'][0]:.2f} % vs {100 * sm1['accuracy'][0]:.2f} %",
             sr["accuracy"][0] > sm1["accuracy"][0], _why_acc(sr, sm1)),
        goal("SR raises accuracy over SM at x_max0 = 2 (Table 1)" + q, "SM + SR > SM x_max0=2",
             f"{100 * sr['accuracy'][0]:.2f} % vs {100 * sm2['accuracy'][0]:.2f} %",
             sr["accuracy"][0] > sm2["accuracy"][0], _why_acc(sr, sm2)),
        goal("TR raises accuracy" + q, "SM + SR + TR > SM + SR",
             f"{100 * tr['accuracy'][0]:.2f} % vs {100 * sr['accuracy'][0]:.2f} %",
             tr["accuracy"][0] > sr["accuracy"][0], _why_acc(tr, sr)),
    ]
    for t in (tb1, tb2):
        drop = 100 * (tr["accuracy"][0] - t["accuracy"][0])
        cut = 1 - t["spikes_per_sample"][0] / tr["spikes_per_sample"][0]
        diffs = [a["spikes_per_sample"] - b["spikes_per_sample"]
                 for a, b in zip(tr["runs"], t["runs"])]
        every_seed = all(d > 0 for d in diffs)
        why = ([] if every_seed else ["TB did not cut spikes on every seed"]) + (
            [f"accuracy fell {drop:.2f} points"] if drop >= 1.0 else [])
        if max(tr["accuracy"][0], t["accuracy"][0]) < CHANCE:
            why.append("both means near chance level: spikes of networks that did not train")
        out.append(goal(f"TB cuts spikes at < 1 point of accuracy (λ_TB "
                        f"{t['preset']['lambda_tb']:g}){q}",
                        "spikes ↓ on every seed, Δacc < 1 pt",
                        f"spikes {-100 * cut:+.1f} % vs SM + SR + TR (per seed: "
                        + ", ".join(f"{-d:+,.0f}" for d in diffs) + f"); accuracy "
                        f"{-drop:+.2f} points", every_seed and drop < 1.0, "; ".join(why)))
    return out


def _why_acc(new: dict, old: dict) -> str:
    why = []
    if max(new["accuracy"][0], old["accuracy"][0]) < CHANCE:
        why.append("both means near chance level (10 classes)")
    gap = 100 * (old["accuracy"][0] - new["accuracy"][0])
    noise = 100 * max(new["accuracy"][1], old["accuracy"][1])
    if abs(gap) <= noise:
        why.append(f"{abs(gap):.2f} points {'lower' if gap > 0 else 'higher'}, within the seed "
                   f"std ({noise:.2f})")
    elif gap > 0:
        why.append(f"{gap:.2f} points lower, more than the seed std ({noise:.2f})")
    return "; ".join(why)
