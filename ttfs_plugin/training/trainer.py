"""The training loop: Adam, stochastic relaxation per epoch, Eq. 9 loss, tqdm progress."""

from __future__ import annotations

import random
import time
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    RandomSampler,
    SequentialSampler,
    TensorDataset,
)
from tqdm.auto import tqdm

from ..functional import relaxation_probability
from ..metrics import SpikeCounter, evaluate
from .config import TrainConfig
from .losses import total_loss


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a generator for data shuffling."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def batches(dataset: Dataset, batch_size: int, shuffle: bool = False,
            generator: torch.Generator | None = None) -> DataLoader:
    """A loader over ``dataset``; an in-memory ``TensorDataset`` is indexed a whole batch at a
    time (no per-item collate), anything else goes through the usual ``DataLoader``."""
    if not isinstance(dataset, TensorDataset):
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator)
    sampler = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
    return DataLoader(dataset, sampler=BatchSampler(sampler, batch_size, drop_last=False),
                      batch_size=None)


def fit(network: nn.Module, train_set: Dataset, val_set: Dataset | None, cfg: TrainConfig,
        device: str | torch.device = "cpu", progress: bool = True,
        on_epoch: Callable[[dict], None] | None = None) -> list[dict]:
    """Train ``network`` for ``cfg.epochs``; return one record per epoch.

    Each epoch sets the SR probability ``p_relax(e)``, switches TR/TB on from
    ``cfg.reg_start_epoch``, and (given ``val_set``) evaluates the TTFS network in eval mode.
    """
    generator = seed_everything(cfg.seed)
    network.to(device)
    optimizer = torch.optim.Adam(network.parameters(), lr=cfg.lr)
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, cfg.epochs)
                 if cfg.lr_schedule == "cosine" else None)
    train_loader = batches(train_set, cfg.batch_size, shuffle=True, generator=generator)
    val_loader = batches(val_set, 512) if val_set is not None else None
    history: list[dict] = []
    for epoch in range(cfg.epochs):
        p_relax = relaxation_probability(epoch, cfg.sr_target_epoch)
        if hasattr(network, "set_relaxation"):
            network.set_relaxation(p_relax)
        regularise = epoch >= cfg.reg_start_epoch
        network.train()
        start = time.perf_counter()
        loss_sum = correct = seen = 0.0
        bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress,
                   leave=False)
        with SpikeCounter(network) as counter:
            for x, y in bar:
                x, y = x.to(device), y.to(device)
                logits = network(x)
                loss, _ = total_loss(
                    logits, y, network, lambda_w=cfg.lambda_w,
                    lambda_tr=cfg.lambda_tr if regularise else 0.0,
                    lambda_tb=cfg.lambda_tb if regularise else 0.0, tb_mode=cfg.tb_mode)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += loss.item() * y.numel()
                correct += (logits.argmax(1) == y).sum().item()
                seen += y.numel()
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}",
                                spikes=f"{counter.spikes_per_sample():.0f}")
        if scheduler is not None:
            scheduler.step()
        record = {"epoch": epoch + 1, "p_relax": p_relax, "regularised": regularise,
                  "train_loss": loss_sum / seen, "train_accuracy": correct / seen,
                  "train_spikes_per_sample": counter.spikes_per_sample(),
                  "epoch_seconds": time.perf_counter() - start}
        if val_loader is not None:
            val = evaluate(network, val_loader, device)
            record["val_accuracy"] = val["accuracy"]
            if "spikes_per_sample" in val:
                record["val_spikes_per_sample"] = val["spikes_per_sample"]
                record["val_sparsity"] = val["sparsity"]
        history.append(record)
        if progress:
            tqdm.write(_summary(record))
        if on_epoch is not None:
            on_epoch(record)
    return history


def _summary(record: dict) -> str:
    text = (f"epoch {record['epoch']}: loss {record['train_loss']:.4f} "
            f"train acc {record['train_accuracy']:.4f}")
    if "val_accuracy" in record:
        text += f" | val acc {record['val_accuracy']:.4f}"
    if "val_spikes_per_sample" in record:
        text += (f" spikes/sample {record['val_spikes_per_sample']:.0f}"
                 f" spikes/neuron {record['val_sparsity']:.4f}")
    return text + f" ({record['epoch_seconds']:.1f}s)"
