"""The training loop: Adam, stochastic relaxation per epoch, Eq. 9 loss, tqdm progress,
checkpoints every epoch, ``--resume``, DDP under ``torchrun``, bf16 autocast on CUDA, and
optionally precise batch-norm statistics at the end (:func:`precise_batchnorm`).

Reproducibility: every epoch re-seeds its randomness (weight updates aside, the shuffling and the
SR draws) from ``(seed, epoch)``, so a run resumed from the checkpoint of epoch ``e`` continues
exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import contextlib
import random
import time
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import update_bn
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    DistributedSampler,
    RandomSampler,
    SequentialSampler,
    TensorDataset,
)
from tqdm import tqdm

from ..checkpoint import save_checkpoint
from ..errors import CheckpointError
from ..functional import relaxation_probability
from ..layers import set_relaxation
from ..metrics import SpikeCounter, evaluate
from .config import TrainConfig
from .distributed import DistContext, convert_sync_batchnorm
from .losses import total_loss
from .rundir import RunDirectory


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a generator for data shuffling."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def batches(dataset: Dataset, batch_size: int, shuffle: bool = False,
            generator: torch.Generator | None = None, sampler=None) -> DataLoader:
    """A loader over ``dataset``; an in-memory ``TensorDataset`` is indexed a whole batch at a
    time (no per-item collate), anything else goes through the usual ``DataLoader``."""
    if sampler is None:
        sampler = (RandomSampler(dataset, generator=generator) if shuffle
                   else SequentialSampler(dataset))
    if not isinstance(dataset, TensorDataset):
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler)
    return DataLoader(dataset, sampler=BatchSampler(sampler, batch_size, drop_last=False),
                      batch_size=None)


def make_scheduler(optimizer, cfg: TrainConfig):
    if cfg.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, cfg.epochs)
    if cfg.lr_schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, cfg.lr_step, cfg.lr_gamma)
    return None


def fit(network: nn.Module, train_set: Dataset, val_set: Dataset | None, cfg: TrainConfig,
        device: str | torch.device = "cpu", progress: bool = True,
        on_epoch: Callable[[dict], None] | None = None, run: RunDirectory | None = None,
        resume_from: dict | None = None, metadata: dict | None = None,
        dist_ctx: DistContext | None = None) -> list[dict]:
    """Train ``network`` for ``cfg.epochs``; return one record per epoch.

    Each epoch sets the SR probability ``p_relax(e)``, switches TR/TB on from
    ``cfg.reg_start_epoch``, evaluates the TTFS network on ``val_set`` (eval mode) and, given a
    ``run`` folder, writes a checkpoint (weights, optimizer, scheduler, history) and a log row.
    ``resume_from`` (a checkpoint dict) continues where it stopped.
    """
    ctx = dist_ctx or DistContext()
    device = torch.device(device)
    seed_everything(cfg.seed)
    if resume_from is not None:
        try:
            network.load_state_dict(resume_from["state_dict"])
        except (KeyError, RuntimeError) as exc:
            raise CheckpointError(f"cannot resume: the checkpoint does not fit this network "
                                  f"({str(exc).splitlines()[0]})") from None
    network.to(device)
    if ctx.enabled and device.type == "cuda":
        network = convert_sync_batchnorm(network)
    model = network
    if ctx.enabled:
        model = nn.parallel.DistributedDataParallel(
            network, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True)  # a relaxed layer leaves tau/td unused
    optimizer = torch.optim.Adam(network.parameters(), lr=cfg.lr)
    scheduler = make_scheduler(optimizer, cfg)
    history: list[dict] = []
    start_epoch = 0
    if resume_from is not None:
        optimizer.load_state_dict(resume_from["optimizer"])
        if scheduler is not None and resume_from.get("scheduler"):
            scheduler.load_state_dict(resume_from["scheduler"])
        history = list(resume_from.get("history", []))
        start_epoch = int(resume_from["epoch"])
    val_loader = batches(val_set, 512) if val_set is not None and ctx.is_main else None
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                if cfg.bf16 and device.type == "cuda" else contextlib.nullcontext())

    def save(epoch: int) -> None:
        run.rotate()
        save_checkpoint(run.checkpoint, network, epoch=epoch, history=history,
                        optimizer=optimizer.state_dict(),
                        scheduler=scheduler.state_dict() if scheduler else None,
                        training=cfg.to_dict(), **(metadata or {}))

    for epoch in range(start_epoch, cfg.epochs):
        epoch_seed = cfg.seed * 100_003 + epoch
        torch.manual_seed(epoch_seed)
        sampler = None
        if ctx.enabled:
            sampler = DistributedSampler(train_set, ctx.world_size, ctx.rank, shuffle=True,
                                         seed=cfg.seed)
            sampler.set_epoch(epoch)
        train_loader = batches(train_set, max(1, cfg.batch_size // ctx.world_size), shuffle=True,
                               generator=torch.Generator().manual_seed(epoch_seed),
                               sampler=sampler)
        p_relax = relaxation_probability(epoch, cfg.sr_target_epoch)
        set_relaxation(network, p_relax, torch.Generator().manual_seed(epoch_seed + 1))
        regularise = epoch >= cfg.reg_start_epoch
        model.train()
        start = time.perf_counter()
        loss_sum = correct = seen = 0.0
        bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   disable=not (progress and ctx.is_main), leave=False)
        with SpikeCounter(network) as counter:
            for x, y in bar:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                with autocast:
                    logits = model(x)
                loss, _ = total_loss(
                    logits.float(), y, network, lambda_w=cfg.lambda_w,
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
                  "lr": optimizer.param_groups[0]["lr"],
                  "train_loss": loss_sum / seen, "train_accuracy": correct / seen,
                  "train_spikes_per_sample": counter.spikes_per_sample(),
                  "epoch_seconds": time.perf_counter() - start}
        if val_loader is not None:
            val = evaluate(network, val_loader, device)
            record["val_accuracy"] = val["accuracy"]
            if "spikes_per_sample" in val:
                record["val_spikes_per_sample"] = val["spikes_per_sample"]
                record["val_sparsity"] = val["sparsity"]
        record["kernels"] = {name: [k.effective_tau().item(), k.td.item()]
                             for name, k in _kernels(network)}
        history.append(record)
        if ctx.is_main:
            if run is not None:
                save(epoch + 1)
                run.log_epoch(record)
            if progress:
                tqdm.write(_summary(record))
            if on_epoch is not None:
                on_epoch(record)
        ctx.barrier()
    set_relaxation(network, 0.0)
    if cfg.precise_bn and history:
        with autocast:
            precise_batchnorm(network, batches(train_set, cfg.batch_size), device)
        record = {"batches": -(-len(train_set) // cfg.batch_size)}
        if val_loader is not None:
            val = evaluate(network, val_loader, device)
            record.update({f"val_{key}": val[key] for key in
                           ("accuracy", "spikes_per_sample", "sparsity") if key in val})
        history[-1]["precise_bn"] = record
        if ctx.is_main:
            if run is not None:
                save(history[-1]["epoch"])
            if progress:
                tqdm.write("precise batch-norm statistics: " + ", ".join(
                    f"{k} {v:.4g}" for k, v in record.items()))
        ctx.barrier()
    return history


def precise_batchnorm(network: nn.Module, loader, device: str | torch.device = "cpu") -> None:
    """Recompute every batch norm's running mean and variance with the final weights: one
    forward pass (train mode, no gradient) over ``loader``, averaged over all its batches.

    During training the running statistics are an exponential average (momentum 0.1) over the
    last few dozen batches, taken while the weights still moved. TB leaves most pre-activations
    of a TTFS network just under the firing floor, so a small error in those statistics turns
    neurons on or off in evaluation; the whole-set average removes it ("precise BN", Wu &
    Johnson 2021). Uses :func:`torch.optim.swa_utils.update_bn`.
    """
    update_bn(loader, network, torch.device(device))


def _kernels(network: nn.Module):
    """``(layer name, TemporalKernel)`` of every spiking layer (for Fig. 5 of the paper)."""
    for name, module in network.named_modules():
        kernel = getattr(module, "kernel", None)
        if hasattr(module, "count_spikes") and kernel is not None:
            yield name, kernel


def _summary(record: dict) -> str:
    text = (f"epoch {record['epoch']}: loss {record['train_loss']:.4f} "
            f"train acc {record['train_accuracy']:.4f}")
    if "val_accuracy" in record:
        text += f" | val acc {record['val_accuracy']:.4f}"
    if "val_spikes_per_sample" in record:
        text += (f" spikes/sample {record['val_spikes_per_sample']:.0f}"
                 f" spikes/neuron {record['val_sparsity']:.4f}")
    return text + f" ({record['epoch_seconds']:.1f}s)"
