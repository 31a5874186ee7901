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
# # 04 · Convert your own model
#
# You do not need the model zoo: the surrogate layers are ordinary `nn.Module`s and the training
# methods ordinary losses. This notebook writes a CNN by hand as an `nn.Sequential`, trains it
# with its own training loop, converts it to **snnTorch** and **Norse**, checks that both
# time-stepped networks agree with the surrogate, and counts their spikes.
#
# What converts (`ttfs_plugin.export.plan_network`): an `nn.Sequential` (nested ones are
# flattened) that starts with an `InputEncoder`; then, per hidden spiking layer, a `Conv2d` or
# `Linear`, an optional batch norm (`TBBatchNorm1d/2d` or torch's own, folded into the weights
# with its running statistics) and a `TTFSActivation`; `MaxPool2d` (non-overlapping) right after
# a neuron, `AvgPool2d` and `Flatten` anywhere between neuron and weight op; `Identity` and
# `Dropout` are skipped; the network ends with a `Linear` whose membrane gives the logits.
# Every layer must share one window `T`.

# %%
# %matplotlib inline
# ruff: noqa: E402
import os
import tempfile
import time
import warnings
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets

from ttfs_plugin import InputEncoder, TBBatchNorm1d, TBBatchNorm2d, TTFSActivation, plot
from ttfs_plugin import norse as tnorse
from ttfs_plugin import snntorch as tsnn
from ttfs_plugin.data import load_dataset
from ttfs_plugin.export import ExportError, plan_network
from ttfs_plugin.functional import relaxation_probability
from ttfs_plugin.metrics import SpikeCounter
from ttfs_plugin.simulation import agreement, surrogate_spike_times
from ttfs_plugin.training import batches, seed_everything, total_loss

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
generator = seed_everything(0)
print(f"data {SHOWN}; SMALL={SMALL}")

# %% [markdown]
# ## Data: MNIST
#
# `mnist9k` holds the first 9,000 MNIST test images as IDX files; `load_dataset("mnist-idx")`
# trains on images 0–7,999 and validates on 8,000–8,999.

# %%
data = load_dataset("mnist-idx", DATA / "mnist9k")
train, val = data.train, data.val
if SMALL:
    train = TensorDataset(*(t[:800] for t in data.train.tensors))
    val = TensorDataset(*(t[:300] for t in data.val.tensors))
print(f"{len(train)} train / {len(val)} val images of shape {data.in_shape}")

# %% [markdown]
# ## Your model
#
# The input encoder turns pixel intensities into first-spike times. Each hidden spiking layer
# is a weight op, a TB batch norm and a TTFS neuron; `T = 32` time steps per layer, kernels
# initialised at `τ = 10`, `td = 0`. The weight ops need no bias: the batch norm has one. Naming
# the layers (an `OrderedDict`) is optional; the names label the spikes of each layer below.

# %%
T = 32
c1, c2 = (8, 16) if SMALL else (16, 32)
model = nn.Sequential(OrderedDict([
    ("input", InputEncoder((1, 28, 28), T=T)),
    ("conv1", nn.Conv2d(1, c1, 3, padding=1, bias=False)),
    ("bn1", TBBatchNorm2d(c1)),
    ("spike1", TTFSActivation(T)),
    ("pool1", nn.MaxPool2d(2)),
    ("conv2", nn.Conv2d(c1, c2, 3, padding=1, bias=False)),
    ("bn2", TBBatchNorm2d(c2)),
    ("spike2", TTFSActivation(T)),
    ("pool2", nn.MaxPool2d(2)),
    ("flatten", nn.Flatten()),
    ("fc3", nn.Linear(c2 * 7 * 7, 128, bias=False)),
    ("bn3", TBBatchNorm1d(128)),
    ("spike3", TTFSActivation(T)),
    ("output", nn.Linear(128, 10)),
]))
print(model)

# %% [markdown]
# `plan_network` is the graph walk both exporters share. Checking the plan before training
# catches a layer the spiking network cannot represent; for example an `nn.ReLU`:

# %%
try:
    plan_network(nn.Sequential(InputEncoder((1, 28, 28), T=T), nn.Flatten(),
                               nn.Linear(784, 10), nn.ReLU(), nn.Linear(10, 10)))
except ExportError as error:
    print("ExportError:", error)
for stage in plan_network(model):
    print(type(stage).__name__, stage.name)

# %% [markdown]
# ## Your training loop
#
# The plugin's pieces, in a plain PyTorch loop:
#
# * **SR** — set `relax_probability` of every `TTFSActivation` each epoch from
#   `relaxation_probability(epoch, sr_target)` (the input encoder is never relaxed);
# * **Eq. 9** — `total_loss` adds L2 on the weights, TR (`lambda_tr`, on every temporal kernel)
#   and TB (`lambda_tb`, the expected spikes of every TB batch norm that feeds a neuron) to the
#   cross-entropy; TR and TB start at the SR target epoch, as in the authors' code.
#
# (`ttfs_plugin.training.fit` does the same for a `TTFSNetwork`, with checkpoints and logs.)

# %%
epochs = 3 if SMALL else 6
sr_target = 2 if SMALL else 3
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)


@torch.no_grad()
def accuracy_and_spikes(net, dataset):
    net.eval()
    correct = 0
    with SpikeCounter(net) as counter:
        for x, y in batches(dataset, 500):
            correct += (net(x).argmax(1) == y).sum().item()
    return correct / len(dataset), counter.spikes_per_sample()


start = time.perf_counter()
for epoch in range(epochs):
    p_relax = relaxation_probability(epoch, sr_target)
    for module in model.modules():
        if isinstance(module, TTFSActivation):
            module.relax_probability = p_relax
    regularise = epoch >= sr_target
    model.train()
    for x, y in batches(train, 64, shuffle=True, generator=generator):
        loss, parts = total_loss(model(x), y, model, lambda_w=1e-4,
                                 lambda_tr=1e-4 if regularise else 0.0,
                                 lambda_tb=1e-4 if regularise else 0.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    accuracy, spikes = accuracy_and_spikes(model, val)
    print(f"epoch {epoch + 1}: p_relax {p_relax:.2f}, loss {loss.item():.3f} "
          f"({', '.join(f'{k} {v:.3g}' for k, v in parts.items())}), "
          f"val accuracy {100 * accuracy:.1f} %, {spikes:.0f} spikes/sample")
for module in model.modules():  # training is over: no relaxation from here on
    if isinstance(module, TTFSActivation):
        module.relax_probability = 0.0
print(f"trained in {time.perf_counter() - start:.1f} s")

# %% [markdown]
# ## Convert to snnTorch and Norse
#
# Both exporters fold each batch norm into its weight op and build the time-stepped network.
# One call each:

# %%
snn_net = tsnn.to_snntorch(model)
norse_net = tnorse.to_norse(model)
print(f"snnTorch: {type(snn_net).__name__} of {len(snn_net)} modules; "
      f"Norse: {type(norse_net).__name__} of {len(norse_net)} modules; "
      f"{tsnn.num_steps(snn_net)} time steps")

# %% [markdown]
# ## Check agreement
#
# `surrogate_spike_times` runs the surrogate in eval mode and records every neuron's spike time;
# `agreement` compares them with a simulation: the fraction of samples with the same prediction
# and of neurons with the same spike time.

# %%
x_val, y_val = val.tensors
x, y = x_val[:64], y_val[:64]
logits, times = surrogate_spike_times(model, x)
results = {}
for backend, adapter, net in (("snnTorch", tsnn, snn_net), ("Norse", tnorse, norse_net)):
    start = time.perf_counter()
    with torch.no_grad():
        results[backend] = adapter.simulate(net, x)
    seconds = time.perf_counter() - start
    accuracy = (results[backend].logits.argmax(1) == y).double().mean().item()
    print(f"{backend:<9} accuracy {100 * accuracy:.1f} %, {seconds:.1f} s, "
          f"{agreement(results[backend], logits, times)}")
print(f"surrogate accuracy {100 * (logits.argmax(1) == y).double().mean().item():.1f} %")

# %% [markdown]
# In float32 a handful of spike times may differ by one step, when a membrane potential lands
# within rounding error of a threshold (the surrogate sums a layer's input in one convolution, the
# simulation over `T` steps). In float64 the two are identical:

# %%
model64 = model.double()
logits64, times64 = surrogate_spike_times(model64, x.double())
with torch.no_grad():
    result64 = tsnn.simulate(tsnn.to_snntorch(model64), x.double())
print("float64:", agreement(result64, logits64, times64))
model = model.float()

# %% [markdown]
# ## Count spikes
#
# `SimulationResult.spike_counts` holds each layer's spikes per sample, and `efficiency()` the
# totals: spikes per sample, spikes per neuron, spike rate, latency `(L+1)·T` and the normalised
# energy.

# %%
result = results["snnTorch"]
eff = result.efficiency()
for layer in eff["per_layer"]:
    print(f"{layer['name']:<4} {layer['neurons']:>6} neurons  "
          f"{layer['spikes_per_sample']:>8.1f} spikes/sample  {layer['sparsity']:.3f} per neuron")
print(f"total {eff['neurons']:>5} neurons  {eff['spikes_per_sample']:>8.1f} spikes/sample  "
      f"{eff['sparsity']:.3f} per neuron, {eff['time_steps']} steps, "
      f"energy {eff['energy']['truenorth']:.3f} (TrueNorth) / "
      f"{eff['energy']['spinnaker']:.3f} (SpiNNaker)")

# %%
plot.spikes_per_layer(result, title="snnTorch: spikes per layer")

# %%
plot.spike_raster(result, sample=0, select="firing")

# %% [markdown]
# ## Save and reload the spiking network
#
# `save` writes the exported network with a description of its layers; `load` rebuilds it
# without the surrogate model or any training code.

# %%
with tempfile.TemporaryDirectory() as folder:
    path = Path(folder) / "my_model_snntorch.pt"
    tsnn.save(snn_net, path)
    reloaded = tsnn.load(path)
    with torch.no_grad():
        again = tsnn.simulate(reloaded, x)
print(f"{path.name}: same logits after reload: {torch.equal(again.logits, result.logits)}")
