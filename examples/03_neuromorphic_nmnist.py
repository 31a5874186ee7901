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
# # 03 · Neuromorphic data: N-MNIST → TTFS → Norse
#
# N-MNIST (Orchard et al. 2015) records MNIST digits with an event camera (ATIS, 34×34 pixels)
# moved in three saccades: each sample is a list of events `(x, y, t, p)` — pixel, time in µs and
# polarity (ON: brighter, OFF: darker). This notebook
#
# 1. reads the events of one recording and shows them;
# 2. loads the 1,000 samples of `nmnist1k` through tonic: **events → frames** (time bins ×
#    polarities become channels) → intensities in `[0, 1]`, which the TTFS input encoder turns
#    into first-spike times;
# 3. trains a small TTFS CNN on the frames;
# 4. exports it to **Norse** (`ttfs_plugin.norse.to_norse`), simulates it step by step, and
#    checks that it agrees with the surrogate.
#
# `SMALL=1` trains a narrower network on a subset for two epochs (a smoke test).

# %%
# %matplotlib inline
# ruff: noqa: E402
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch.utils.data import TensorDataset

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets

from ttfs_plugin import norse as tnorse
from ttfs_plugin import plot
from ttfs_plugin.data import EventOptions, load_dataset
from ttfs_plugin.data.events import events_to_frames, read_nmnist_events
from ttfs_plugin.metrics import evaluate
from ttfs_plugin.models import small_cnn
from ttfs_plugin.simulation import agreement, surrogate_spike_times
from ttfs_plugin.training import TrainConfig, batches, fit, seed_everything

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
NMNIST = DATA / "nmnist1k"
seed_everything(0)
print(f"N-MNIST samples in {SHOWN}/nmnist1k; SMALL={SMALL}")

# %% [markdown]
# ## 1. One recording, as events

# %%
events = read_nmnist_events(NMNIST / "1.bin")
label = int((NMNIST / "labels.tsv").read_text().splitlines()[1].split("\t")[1])
span_ms = (events["t"].max() - events["t"].min()) / 1000
print(f"sample 1 (digit {label}): {len(events)} events over {span_ms:.0f} ms, "
      f"{(events['p'] == 1).sum()} ON / {(events['p'] == 0).sum()} OFF")
print("first events (x, y, t µs, p):", events[:4].tolist())

# %%
fig = Figure(figsize=(10, 3.4), layout="constrained")
ax_xy, ax_t = fig.subplots(1, 2, width_ratios=(1, 2))
signed = np.zeros((34, 34))  # ON events count +1, OFF events -1, per pixel
np.add.at(signed, (events["y"], events["x"]), np.where(events["p"] == 1, 1, -1))
limit = np.abs(signed).max()
image = ax_xy.imshow(signed, cmap="coolwarm", vmin=-limit, vmax=limit)
fig.colorbar(image, ax=ax_xy, shrink=0.8, label="ON − OFF events")
ax_xy.set_title(f"all events of a '{label}'")
ax_xy.axis("off")
ax_t.scatter(events["t"] / 1000, events["x"], s=1, c=events["p"], cmap="coolwarm")
ax_t.set(xlabel="time (ms)", ylabel="x", title="x over time: the three saccades")
fig  # noqa: B018

# %% [markdown]
# ## 2. Events → frames
#
# `EventOptions(time_bins=2)` cuts each recording into 2 equal time bins and counts the events
# per bin, polarity and pixel with `tonic.transforms.ToFrame`. Channel `2·bin + polarity` of the
# result holds one count map, so a sample becomes a `(4, 34, 34)` image; counts are divided by
# the sample's largest count (`normalise="max"`).

# %%
options = EventOptions(time_bins=2)
frames = events_to_frames(events, (34, 34, 2), options)
fig = Figure(figsize=(10, 2.8), layout="constrained")
for channel, ax in enumerate(fig.subplots(1, frames.shape[0])):
    image = ax.imshow(frames[channel].numpy(), cmap="magma", vmin=0, vmax=1)
    ax.set_title(f"channel {channel}: bin {channel // 2}, {'ON' if channel % 2 else 'OFF'}",
                 fontsize="small")
    ax.axis("off")
fig.colorbar(image, ax=fig.axes, shrink=0.8, label="intensity")
fig  # noqa: B018

# %% [markdown]
# `load_dataset("nmnist", …, events=…)` does this for every sample once, at load time, and keeps
# the frames in memory: training never reads the event files again. `nmnist1k` trains on samples
# 1–900 and validates on 901–1,000.

# %%
start = time.perf_counter()
data = load_dataset("nmnist", NMNIST, events={"time_bins": 2})
print(f"loaded and framed {len(data.train) + len(data.val)} recordings in "
      f"{time.perf_counter() - start:.1f} s: in_shape {data.in_shape}, "
      f"{len(data.train)} train / {len(data.val)} val")
train = data.train
if SMALL:
    train = TensorDataset(*(t[:400] for t in data.train.tensors))

# %% [markdown]
# ## 3. Train a TTFS CNN
#
# `small_cnn`: conv – max-pool – conv – max-pool – dense – output, with the full method
# (`sm+sr+tr+tb`: SR for the first quarter of the run, then TR and TB).

# %%
epochs = 2 if SMALL else 10
channels, hidden = ((8, 16), 64) if SMALL else ((32, 64), 256)
net = small_cnn(num_classes=data.num_classes, in_shape=data.in_shape, channels=channels,
                hidden=hidden, T=32, tau0=10.0, td0=0.0)
config = TrainConfig(epochs=epochs, batch_size=32 if SMALL else 64, sr_target=max(1, epochs // 4),
                     lambda_tr=1e-4, lambda_tb=1e-4)
start = time.perf_counter()
history = fit(net, train, data.val, config, progress=False)
print(f"{epochs} epoch(s) on {len(train)} samples in {time.perf_counter() - start:.1f} s")
for record in history[-3:]:
    print(f"epoch {record['epoch']:>2}: val accuracy {100 * record['val_accuracy']:.1f} %, "
          f"{record['val_spikes_per_sample']:.0f} spikes/sample, "
          f"{record['val_sparsity']:.3f} spikes/neuron")

# %%
plot.training_curves(history, title="small CNN on N-MNIST frames")

# %% [markdown]
# ## 4. Export to Norse
#
# `to_norse` builds a `norse.torch.SequentialState` of `TTFSCell`s (Norse `SNNCell`s whose `τ`,
# `td` are registered parameters), temporal-kernel synapses, first-spike max-pooling and a
# readout integrator. `simulate` runs `out, state = net(x_t, state)` for `(L+1)·T` steps with the
# frames as one current impulse at step 0.

# %%
norse_net = tnorse.to_norse(net)
print(norse_net)

# %%
x_val, y_val = data.val.tensors
n_sim = 32 if SMALL else len(x_val)
x, y = x_val[:n_sim], y_val[:n_sim]
start = time.perf_counter()
with torch.no_grad():
    result = tnorse.simulate(norse_net, x)
print(f"Norse: {n_sim} samples × {result.steps} steps in {time.perf_counter() - start:.1f} s")
norse_accuracy = (result.logits.argmax(1) == y).double().mean().item()
surrogate = evaluate(net, batches(TensorDataset(x, y), 256))
print(f"accuracy: Norse {100 * norse_accuracy:.1f} %, surrogate "
      f"{100 * surrogate['accuracy']:.1f} %")

# %% [markdown]
# ### Agreement with the surrogate
#
# Same predictions, and the same spike time for every neuron up to float summation order (the
# surrogate sums each layer's input in one convolution, the simulation over `T` steps):

# %%
logits, times = surrogate_spike_times(net, x)
print(agreement(result, logits, times))
eff = result.efficiency()
print(f"Norse: {eff['spikes_per_sample']:.0f} spikes/sample, {eff['sparsity']:.4f} spikes/neuron "
      f"in {eff['time_steps']} steps; surrogate: {surrogate['spikes_per_sample']:.0f} "
      "spikes/sample")

# %%
plot.spike_raster(result, sample=0, select="firing")

# %%
plot.spikes_per_layer(result)

# %% [markdown]
# ## From the command line
#
# ```bash
# ttfs train --dataset nmnist --data-dir ../shared/data/nmnist1k --time-bins 2 --model cnn \
#     --epochs 10 --out runs/nmnist
# ttfs evaluate runs/nmnist/checkpoint.pt --backend norse --json
# ttfs export runs/nmnist/checkpoint.pt --backend norse --out nmnist_norse.pt
# ```
