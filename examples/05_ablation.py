# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · Ablation: SM, +SR, +TR, +TB on MNIST
#
# Park & Yoon (2021) build their method in four steps (their Table 1), each a preset here:
#
# | preset | what it adds | initial kernel |
# |---|---|---|
# | `sm` | the surrogate model alone | `x_max = 2` (`td0 = τ0 ln 2`) |
# | `sm+sr` | stochastic relaxation: ReLU paths early in training | `x_max = 1` (`td0 = 0`) |
# | `sm+sr+tr` | temporal-kernel regularisation (`lambda_TR = 1e-4`) | `x_max = 1` |
# | `sm+sr+tr+tb` | TB batch norm: expected spikes in the loss (`lambda_TB = 1e-4`) | `x_max = 1` |
#
# This notebook trains the same small CNN with each preset on MNIST (`mnist9k`) and redraws the
# paper's figures from the four runs:
#
# * **Fig. 7** — the pre-activation histograms of every spiking layer with `θ0·x_min` and
#   `θ0·x_max`: below the first a neuron is *pruned* (no spike), above the second its spike is
#   *clipped* to `t = 0`, in between it is *quantized* to one of the `T` levels;
# * **Fig. 5** — the kernel parameters `τ`, `td` of every layer over training (recorded with
#   `fit(on_epoch=...)` and `plot.kernel_snapshot`);
# * the spikes per layer of each run.
#
# `SMALL=1` trains a narrow CNN on 600 images for 3 epochs per preset (SR on the first epoch,
# TR and TB on the last two): the figures have the right shape, not the paper's numbers, and
# the TR and TB runs barely differ from `sm+sr` in so few steps. The full run trains the CNN of
# `docs/results.md` on all 8,000 training images for 12 epochs per preset: an epoch takes about
# 17 s on 2 idle CPU cores, so plan for 15–20 minutes for the four runs.

# %%
# %matplotlib inline
# ruff: noqa: E402
import os
import time
import warnings
from pathlib import Path

from IPython.display import display
from matplotlib.figure import Figure
from torch.utils.data import TensorDataset

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets

from ttfs_plugin import plot
from ttfs_plugin.data import load_dataset
from ttfs_plugin.metrics import evaluate
from ttfs_plugin.models import small_cnn
from ttfs_plugin.training import (
    PRESETS,
    TrainConfig,
    batches,
    fit,
    get_preset,
    seed_everything,
    td_for_x_max,
)

SMALL = os.environ.get("SMALL", "0") == "1"


def repo_root(start: Path) -> Path:
    """The checkout this notebook lives in (the folder with pyproject.toml and ttfs_plugin/)."""
    for folder in (start, *start.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "ttfs_plugin").is_dir():
            return folder
    return start


ROOT = repo_root(Path.cwd().resolve())
# TTFS_DATA_DIR, or ../shared/data beside the checkout; a relative path is taken from the root.
DATA = Path(os.environ.get("TTFS_DATA_DIR", "../shared/data")).expanduser()
DATA = DATA if DATA.is_absolute() else (ROOT / DATA).resolve()
SHOWN = os.path.relpath(DATA, ROOT)  # for messages: the data folder from the repository root
print(f"data {SHOWN}; SMALL={SMALL}")

# %% [markdown]
# ## Data and settings

# %%
data = load_dataset("mnist-idx", DATA / "mnist9k")
train, val = data.train, data.val
if SMALL:
    train = TensorDataset(*(t[:600] for t in data.train.tensors))
    val = TensorDataset(*(t[:200] for t in data.val.tensors))

EPOCHS = 3 if SMALL else 12
SR_TARGET = 2 if SMALL else 3  # a quarter of the run
REG_START = 1 if SMALL else None  # TR and TB from here (None: at the SR target, as the paper)
CHANNELS, HIDDEN = ((8, 16), 64) if SMALL else ((32, 64), 256)
T, TAU0 = 32, 10.0
print(f"{len(train)} train / {len(val)} val images; {EPOCHS} epochs per preset, SR target "
      f"{SR_TARGET}; CNN channels {CHANNELS}, hidden {HIDDEN}; T = {T}, tau0 = {TAU0}")
for name, preset in PRESETS.items():
    print(f"{name:<12} {preset}")

# %% [markdown]
# ## Four training runs
#
# Each run starts from the same seed. `on_epoch` records the kernel parameters of every layer
# after each epoch (with one snapshot before training, index = epochs done).

# %%
runs = {}
for name in PRESETS:
    preset = get_preset(name)
    seed_everything(0)
    net = small_cnn(num_classes=data.num_classes, in_shape=data.in_shape, channels=CHANNELS,
                    hidden=HIDDEN, T=T, tau0=TAU0, td0=td_for_x_max(preset.x_max0, TAU0))
    config = TrainConfig(epochs=EPOCHS, batch_size=64 if SMALL else 128,
                         sr_target=SR_TARGET if preset.sr_target is None else 0,
                         reg_start=REG_START, lambda_tr=preset.lambda_tr,
                         lambda_tb=preset.lambda_tb)
    snapshots = [plot.kernel_snapshot(net)]
    start = time.perf_counter()
    history = fit(net, train, val, config, progress=False,
                  on_epoch=lambda record, net=net, snapshots=snapshots:
                  snapshots.append(plot.kernel_snapshot(net)))
    result = evaluate(net, batches(val, 500))
    runs[name] = {"net": net, "history": history, "kernels": snapshots, "eval": result}
    print(f"{name:<12} {time.perf_counter() - start:5.1f} s: accuracy "
          f"{100 * result['accuracy']:.2f} %, {result['spikes_per_sample']:.0f} spikes/sample")

# %% [markdown]
# ## The ablation table
#
# Accuracy and efficiency of the four TTFS networks on the validation images (the surrogate in
# eval mode, which is exactly what the exported SNN computes). Energy is normalised to the TSC
# reference of the paper (`0.193e6` spikes in 512 steps) for TrueNorth and SpiNNaker.

# %%
print(f"{'preset':<13}{'accuracy':>9}{'spikes/sample':>15}{'spikes/neuron':>15}"
      f"{'TrueNorth':>11}{'SpiNNaker':>11}")
for name, run in runs.items():
    r = run["eval"]
    print(f"{name:<13}{100 * r['accuracy']:>8.2f}%{r['spikes_per_sample']:>15.0f}"
          f"{r['sparsity']:>15.4f}{r['energy']['truenorth']:>11.4f}"
          f"{r['energy']['spinnaker']:>11.4f}")

# %%
fig = Figure(figsize=(10, 3.4), layout="constrained")
ax_acc, ax_spikes = fig.subplots(1, 2)
for name, run in runs.items():
    epochs = [r["epoch"] for r in run["history"]]
    ax_acc.plot(epochs, [100 * r["val_accuracy"] for r in run["history"]], marker=".",
                label=name)
    ax_spikes.plot(epochs, [r["val_spikes_per_sample"] for r in run["history"]], marker=".",
                   label=name)
ax_acc.set(xlabel="epoch", ylabel="validation accuracy (%)", title="accuracy")
ax_spikes.set(xlabel="epoch", ylabel="spikes per sample", title="spikes (validation)")
ax_spikes.legend(fontsize="small", frameon=False)
fig  # noqa: B018

# %% [markdown]
# ## Fig. 7: pre-activations, firing bounds and the three regions
#
# For each spiking layer, the histogram of its pre-activations `z` on 256 validation images
# (200 with `SMALL=1`), with `θ0·x_min` (red) and `θ0·x_max` (purple). The panel titles give the
# fractions of neurons that are pruned, quantized and clipped. `sm` starts with `x_max = 2`, a
# window of `[0.09, 2]`: fewer neurons are clipped, but small values are lost. The other presets
# start at `x_max = 1` (`[0.045, 1]`) and clip more; TR keeps the window where it started, and
# TB moves each batch norm's output down so that more neurons are pruned — fewer spikes (visible
# after a full run; in a `SMALL=1` run the last three presets look alike).

# %%
x_val = val.tensors[0][:256]
for name, run in runs.items():
    fig = plot.preactivation_histograms(run["net"], x_val)
    fig.suptitle(f"preset {name}")
    display(fig)

# %%
print(f"{'preset':<13}{'layer':<7}{'x_min':>8}{'x_max':>8}{'pruned':>9}{'quantized':>11}"
      f"{'clipped':>9}")
for name, run in runs.items():
    for layer, s in plot.preactivation_stats(run["net"], x_val).items():
        print(f"{name:<13}{layer:<7}{s['floor']:>8.4f}{s['ceiling']:>8.3f}"
              f"{100 * s['pruned']:>8.1f}%{100 * s['quantized']:>10.1f}%"
              f"{100 * s['clipped']:>8.1f}%")

# %% [markdown]
# ## Fig. 5: the temporal kernels over training
#
# `τ` (top) and `td` (bottom) of every layer after each epoch. Without TR (`sm`, `sm+sr`) the
# kernels drift freely; TR holds them near `τ0`, `td0`. (`sm` starts from `td0 = τ0 ln 2`.)

# %%
fig = Figure(figsize=(16, 6), layout="constrained")
grid = fig.subplots(2, len(runs), sharex=True)
for column, (name, run) in enumerate(runs.items()):
    plot.kernel_parameters(run["kernels"], axes=[grid[0, column], grid[1, column]])
    grid[0, column].set_title(name)
fig  # noqa: B018

# %% [markdown]
# The same for the full method alone, with the library's own figure:

# %%
plot.kernel_parameters(runs["sm+sr+tr+tb"]["kernels"])

# %% [markdown]
# ## Spikes per layer
#
# Spikes per sample of each spiking layer (bars) and spikes per neuron (line), per preset:

# %%
fig = Figure(figsize=(16, 4), layout="constrained")
for ax, (name, run) in zip(fig.subplots(1, len(runs)), runs.items()):
    plot.spikes_per_layer(run["eval"], ax=ax, title=name)
fig  # noqa: B018

# %% [markdown]
# ## From the command line
#
# ```bash
# for preset in sm sm+sr sm+sr+tr sm+sr+tr+tb; do
#   ttfs train --dataset mnist-idx --data-dir ../shared/data/mnist9k --model cnn \
#              --preset $preset --epochs 12 --out runs/ablation-$preset
#   ttfs plot runs/ablation-$preset          # training curves, kernels, Fig. 7, spikes
# done
# ```
