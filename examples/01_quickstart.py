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
# # 01 · Quickstart: digits → TTFS surrogate → snnTorch
#
# This notebook walks the whole path of `ttfs_plugin` in a minute of CPU time:
#
# 1. load scikit-learn's 8×8 **digits** (built in, no download);
# 2. train a TTFS multilayer perceptron **through the surrogate DNN** with
#    `ttfs_plugin.training.fit` (stochastic relaxation, kernel regularisation and TB batch norm,
#    the full method of Park & Yoon 2021);
# 3. **export** it to snnTorch and **simulate** it step by step as a real spiking network;
# 4. look at the spikes (a raster over the `(L+1)·T` time steps) and the **efficiency table**
#    (spikes, sparsity, latency, normalised energy).
#
# Set `SMALL=1` in the environment for a smoke-test run (fewer epochs; this is what the test
# suite does).

# %%
# %matplotlib inline
# ruff: noqa: E402
import os
import time
import warnings

import torch

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets

from ttfs_plugin import plot
from ttfs_plugin import snntorch as tsnn
from ttfs_plugin.data import load_dataset
from ttfs_plugin.metrics import evaluate
from ttfs_plugin.models import mlp
from ttfs_plugin.simulation import agreement, surrogate_spike_times
from ttfs_plugin.training import TrainConfig, batches, fit, seed_everything

SMALL = os.environ.get("SMALL", "0") == "1"
EPOCHS = 4 if SMALL else 30
seed_everything(0)
print(f"SMALL={SMALL}: {EPOCHS} epochs, torch {torch.__version__}, "
      f"{torch.get_num_threads()} CPU threads")

# %% [markdown]
# ## 1. Data
#
# Every dataset of the plugin loads as a `SplitData`: train / validation splits of float images
# in `[0, 1]` with shape `(C, H, W)`. There is no mean/std normalisation: the input encoder turns
# intensities into first-spike times (brighter = earlier).

# %%
data = load_dataset("digits")
x_train, y_train = data.train.tensors
print(f"{data.name}: {len(data.train)} train / {len(data.val)} val, in_shape {data.in_shape}, "
      f"{data.num_classes} classes, values in [{x_train.min():.1f}, {x_train.max():.1f}]")

# %% [markdown]
# ## 2. The surrogate network
#
# `mlp()` builds input encoder → `Dense(256)` → `Dense(256)` → output. Each hidden layer is a
# `Linear`, a TB batch norm and a TTFS neuron whose temporal kernel
# `κ(t) = exp(-(t - td)/τ)` has its own trainable `τ` and `td` (here `T = 32`, `τ0 = 10`,
# `td0 = 0`).

# %%
net = mlp(num_classes=data.num_classes, in_shape=data.in_shape, hidden=(256, 256),
          T=32, tau0=10.0, td0=0.0)
print(net)

# %% [markdown]
# ## 3. Train through the surrogate
#
# `TrainConfig` holds the Eq. 9 loss weights: L2 on the weights, `lambda_tr` (temporal-kernel
# regularisation, TR) and `lambda_tb` (the TB spike proxy). Stochastic relaxation (SR) lets each
# TTFS layer take a plain ReLU path with probability `1 - (e+1)/e_target` until `sr_target`;
# TR and TB start at that epoch.

# %%
config = TrainConfig(epochs=EPOCHS, sr_target=max(1, EPOCHS // 4), lambda_tr=1e-4,
                     lambda_tb=1e-4)
start = time.perf_counter()
history = fit(net, data.train, data.val, config, progress=False)
print(f"trained {EPOCHS} epochs in {time.perf_counter() - start:.1f} s")
for record in history[-3:]:
    print(f"epoch {record['epoch']:>2}: loss {record['train_loss']:.3f}, "
          f"val accuracy {100 * record['val_accuracy']:.1f} %, "
          f"{record['val_spikes_per_sample']:.0f} spikes/sample")

# %%
plot.training_curves(history, title="MLP on digits")

# %% [markdown]
# The surrogate in eval mode (no relaxation) computes exactly what the spiking network will:
# `metrics.evaluate` reports accuracy and the efficiency figures of SPEC §9.

# %%
surrogate = evaluate(net, batches(data.val, 256))
print(f"surrogate: accuracy {100 * surrogate['accuracy']:.2f} %, "
      f"{surrogate['spikes_per_sample']:.1f} spikes/sample, "
      f"{surrogate['sparsity']:.3f} spikes/neuron, {surrogate['time_steps']} time steps")

# %% [markdown]
# ## 4. Export to snnTorch and simulate
#
# `to_snntorch` folds every batch norm into its weight op and builds an `nn.Sequential` of
# snnTorch modules: `TTFSNeuron` (a `snntorch.SpikingNeuron` with a decaying threshold),
# `TemporalKernelSynapse` and a `ReadoutIntegrator` whose membrane is the logits.
# `simulate` feeds the image as one current impulse at step 0 and steps the network
# `(L+1)·T` times (`spk = net(x_t)`).

# %%
snn_net = tsnn.to_snntorch(net)
print(snn_net)

# %%
x_val, y_val = data.val.tensors
n_sim = 64 if SMALL else len(x_val)
images, labels = x_val[:n_sim], y_val[:n_sim]
start = time.perf_counter()
with torch.no_grad():
    result = tsnn.simulate(snn_net, images)
print(f"simulated {n_sim} samples for {result.steps} steps in "
      f"{time.perf_counter() - start:.2f} s")
snn_accuracy = (result.logits.argmax(1) == labels).double().mean().item()
print(f"snnTorch accuracy on these samples: {100 * snn_accuracy:.2f} %")

# %% [markdown]
# The simulation agrees with the surrogate: same predictions, same spike time for (nearly)
# every neuron. Differences, if any, come from float summation order (the surrogate sums a
# layer's input in one matrix product, the simulation over `T` time steps); in float64 they
# vanish.

# %%
logits, times = surrogate_spike_times(net, images)
print(agreement(result, logits, times))

# %% [markdown]
# ## 5. Spikes
#
# Each neuron fires at most once. Spiking layer `l` (the input encoder is `l = 0`) fires during
# window `l + 1`, so the spikes of one sample march through the network one window per layer:

# %%
plot.spike_raster(result, sample=0)

# %%
plot.spikes_per_layer(result)

# %% [markdown]
# ## 6. Efficiency table
#
# `result.efficiency()` gives the same figures as `metrics.evaluate` for the simulated batch:
# spikes per sample, spikes per neuron (sparsity), spike rate, latency `(L+1)·T` and the energy
# normalised to the TSC reference (Han & Roy 2020) for TrueNorth and SpiNNaker. That reference
# is the paper's CIFAR-10 network, so on digits the energy only compares networks with each
# other (`result.efficiency(reference="1e5,512")`: another one, as spikes and time steps).

# %%
eff = result.efficiency()
rows = [("layer", "neurons", "spikes/sample", "spikes/neuron", "spike rate")]
rows += [(layer["name"], f"{layer['neurons']}", f"{layer['spikes_per_sample']:.1f}",
          f"{layer['sparsity']:.3f}", f"{layer['spike_rate']:.2e}")
         for layer in eff["per_layer"]]
rows.append(("total", f"{eff['neurons']}", f"{eff['spikes_per_sample']:.1f}",
             f"{eff['sparsity']:.3f}", f"{eff['spike_rate']:.2e}"))
for row in rows:
    print(f"{row[0]:<8}{row[1]:>9}{row[2]:>15}{row[3]:>15}{row[4]:>12}")
print()
print(f"accuracy (snnTorch, {n_sim} samples)  {100 * snn_accuracy:.2f} %")
print(f"time steps                        {eff['time_steps']}")
print(f"energy, TrueNorth                 {eff['energy']['truenorth']:.4f}")
print(f"energy, SpiNNaker                 {eff['energy']['spinnaker']:.4f}")
print(f"energy reference                  {eff['energy']['reference']['name']}")

# %% [markdown]
# ## Next
#
# * `ttfs train --dataset digits --out runs/digits` does steps 1–3 from the command line, and
#   `ttfs evaluate runs/digits/checkpoint.pt --backend snntorch --json` steps 4–6;
# * notebook 02 trains the paper's VGG-16 on CIFAR-10, 03 an N-MNIST network exported to Norse,
#   04 converts a model you write yourself, 05 redraws the paper's ablation figures.
