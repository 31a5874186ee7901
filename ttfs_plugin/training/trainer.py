"""The training loop: Adam, stochastic relaxation per epoch, Eq. 9 loss, tqdm progress,
checkpoints every epoch, ``--resume``, DDP under ``torchrun``, bf16 autocast on CUDA, the kernel
errors of Eq. 10–13 per epoch (SPEC §11), and optionally precise batch-norm statistics at the
end (:func:`precise_batchnorm`).

Reproducibility: every epoch re-seeds its randomness (weight updates aside, the shuffling and the
SR draws) from ``(seed, epoch)``, so a run resumed from the checkpoint of epoch ``e`` continues
exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import contextlib
import math
import random
import sys
import time
from collections.abc import Sized
from typing import Callable, cast

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

from ..errors import CheckpointError, ConfigError, TTFSError
from ..functional import relaxation_probability
from ..kernel_errors import network_kernel_errors
from ..layers import set_relaxation
from ..metrics import SpikeCounter, evaluate
from ..records import Checkpoint
from ..roles import SpikingLayer, TrainableKernel, spiking_layers
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
        sized = cast(Sized, dataset)  # torch's Dataset does not declare __len__
        sampler = (RandomSampler(sized, generator=generator) if shuffle
                   else SequentialSampler(sized))
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


#: Validation samples (the first ones) the per-epoch kernel errors are measured on.
KERNEL_ERROR_SAMPLES = 128


class TrainingDiverged(TTFSError):
    """The loss became NaN or infinite; the last good checkpoints are kept."""


class Trainer:
    """One training run, in the steps :func:`fit` takes: :meth:`prepare` (device, DDP,
    optimizer, scheduler), :meth:`restore` (a checkpoint to continue from), then per epoch
    :meth:`train_one_epoch` and :meth:`validate`, a checkpoint and a log row, and
    :meth:`finish` (precise batch-norm statistics).

    ``progress`` shows tqdm bars (only on a terminal: a log file gets no ``\\r`` updates);
    ``log_epochs`` prints one line per epoch. ``kernel_error_samples``: how many of the first
    validation samples each epoch's ``kernel_errors`` are measured on (0: none).
    """

    def __init__(self, network: nn.Module, train_set: Dataset, val_set: Dataset | None,
                 cfg: TrainConfig, device: str | torch.device = "cpu", *,
                 run: RunDirectory | None = None, metadata: dict | None = None,
                 dist_ctx: DistContext | None = None, progress: bool = True,
                 log_epochs: bool | None = None,
                 on_epoch: Callable[[dict], None] | None = None,
                 kernel_error_samples: int = KERNEL_ERROR_SAMPLES) -> None:
        if isinstance(kernel_error_samples, bool) or not isinstance(kernel_error_samples, int) \
                or kernel_error_samples < 0:
            raise ConfigError(f"kernel_error_samples must be an integer >= 0, got "
                              f"{kernel_error_samples!r}")
        self.network, self.train_set, self.val_set, self.cfg = network, train_set, val_set, cfg
        self.kernel_error_samples = kernel_error_samples
        self._kernel_error_x: torch.Tensor | None = None
        self.device = torch.device(device)
        self.run_dir, self.metadata, self.on_epoch = run, dict(metadata or {}), on_epoch
        self.ctx = dist_ctx or DistContext()
        self.progress = progress
        self.log_epochs = progress if log_epochs is None else log_epochs
        self.history: list[dict] = []
        self.start_epoch = 0
        self.prepared = False

    def prepare(self) -> None:
        seed_everything(self.cfg.seed)
        self.network.to(self.device)
        if self.ctx.enabled and self.device.type == "cuda":
            self.network = convert_sync_batchnorm(self.network)
        self.model = self.network
        if self.ctx.enabled:
            self.model = nn.parallel.DistributedDataParallel(
                self.network,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True)  # a relaxed layer leaves tau/td unused
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=self.cfg.lr)
        self.kernel_parameters = [p for m in self.network.modules()
                                  if isinstance(m, TrainableKernel)
                                  for p in (m.tau, m.td) if p.requires_grad]
        self.scheduler = make_scheduler(self.optimizer, self.cfg)
        self.val_loader = (batches(self.val_set, 512)
                           if self.val_set is not None and self.ctx.is_main else None)
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                         if self.cfg.bf16 and self.device.type == "cuda"
                         else contextlib.nullcontext())
        self.prepared = True

    def restore(self, checkpoint: Checkpoint) -> None:
        """Continue from ``checkpoint`` (weights, optimizer, scheduler, history, epoch)."""
        if not self.prepared:
            self.prepare()
        try:
            self.network.load_state_dict(checkpoint.state_dict)
            if checkpoint.optimizer is None:
                raise KeyError("optimizer")
            self.optimizer.load_state_dict(checkpoint.optimizer)
            if self.scheduler is not None and checkpoint.scheduler:
                self.scheduler.load_state_dict(checkpoint.scheduler)
        except (KeyError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"cannot resume: the checkpoint does not fit this run "
                                  f"({str(exc).splitlines()[0]})") from None
        self.history = list(checkpoint.history)
        self.start_epoch = int(checkpoint.epoch)

    def train_one_epoch(self, epoch: int) -> dict:
        """One pass over the training set; the epoch's record (``lr`` is the rate it used)."""
        cfg, network, ctx = self.cfg, self.network, self.ctx
        epoch_seed = cfg.seed * 100_003 + epoch
        torch.manual_seed(epoch_seed)
        sampler: DistributedSampler | None = None
        if ctx.enabled:
            sampler = DistributedSampler(self.train_set, ctx.world_size, ctx.rank, shuffle=True,
                                         seed=cfg.seed)
            sampler.set_epoch(epoch)
        loader = batches(self.train_set, max(1, cfg.batch_size // ctx.world_size), shuffle=True,
                         generator=torch.Generator().manual_seed(epoch_seed), sampler=sampler)
        p_relax = relaxation_probability(epoch, cfg.sr_target_epoch)
        set_relaxation(network, p_relax, torch.Generator().manual_seed(epoch_seed + 1))
        regularise = epoch >= cfg.reg_start_epoch
        frozen = self.kernel_parameters if epoch < cfg.kernel_start else []
        lr = self.optimizer.param_groups[0]["lr"]
        self.model.train()
        start = time.perf_counter()
        loss_sum = correct = seen = 0.0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   disable=not (self.progress and ctx.is_main and _on_terminal()))
        with SpikeCounter(network) as counter:
            for batch, (x, y) in enumerate(bar):
                x = x.to(self.device, non_blocking=True)
                y = y.to(self.device, non_blocking=True)
                with self.autocast:
                    logits = self.model(x)
                loss, _ = total_loss(
                    logits.float(), y, network, lambda_w=cfg.lambda_w,
                    lambda_tr=cfg.lambda_tr if regularise else 0.0,
                    lambda_tb=cfg.lambda_tb if regularise else 0.0, tb_mode=cfg.tb_mode,
                    tb_weighting=cfg.tb_weighting, with_parts=False)
                value = loss.item()
                if not math.isfinite(value):
                    raise TrainingDiverged(
                        f"the loss became {value} at epoch {epoch + 1}, batch {batch + 1}; "
                        "nothing of this epoch was saved (the last good checkpoints are kept)"
                        ": lower --lr or the lambda weights, or check the data")
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                for p in frozen:  # frozen kernels: no gradient, so Adam skips them entirely
                    p.grad = None
                self.optimizer.step()
                loss_sum += value * y.numel()
                correct += (logits.argmax(1) == y).sum().item()
                seen += y.numel()
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}",
                                spikes=f"{counter.spikes_per_sample():.0f}")
        if self.scheduler is not None:
            self.scheduler.step()
        return {"epoch": epoch + 1, "p_relax": p_relax, "regularised": regularise, "lr": lr,
                "train_loss": loss_sum / seen, "train_accuracy": correct / seen,
                "train_spikes_per_sample": counter.spikes_per_sample(),
                "epoch_seconds": time.perf_counter() - start}

    def validate(self, record: dict) -> dict:
        """``record`` plus the validation figures (eval mode), the kernels' ``tau``, ``td`` and,
        for a spiking network with validation data, ``kernel_errors``: per spiking layer the
        figures of :func:`~ttfs_plugin.kernel_errors.kernel_errors` (SPEC §11) on the first
        ``kernel_error_samples`` validation samples (the same ones every epoch)."""
        if self.val_loader is not None:
            val = evaluate(self.network, self.val_loader, self.device, operations=False)
            record["val_accuracy"] = val["accuracy"]
            if "spikes_per_sample" in val:
                record["val_spikes_per_sample"] = val["spikes_per_sample"]
                record["val_sparsity"] = val["sparsity"]
        layers = [(name, cast(SpikingLayer, layer).kernel)
                  for name, layer in spiking_layers(self.network)]
        record["kernels"] = {name: [k.effective_tau().item(), k.td.item()] for name, k in layers}
        x = self._kernel_error_inputs() if layers else None
        if x is not None:
            record["kernel_errors"] = network_kernel_errors(self.network, x.to(self.device))
        return record

    def _kernel_error_inputs(self) -> torch.Tensor | None:
        """The first ``kernel_error_samples`` validation inputs (of the first batch; read once,
        kept on the CPU)."""
        if self.val_loader is None or self.kernel_error_samples == 0:
            return None
        if self._kernel_error_x is None:
            x, _ = next(iter(self.val_loader), (None, None))
            if x is None:
                return None
            self._kernel_error_x = x[:self.kernel_error_samples]  # at most one batch's worth
        return self._kernel_error_x

    def save(self, epoch: int) -> None:
        if self.run_dir is None:
            return
        fields = {k: v for k, v in self.metadata.items() if k in ("dataset", "model", "preset")}
        self.run_dir.save_checkpoint(Checkpoint.of(
            self.network, epoch=epoch, history=self.history,
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict() if self.scheduler else None,
            training=self.cfg.to_dict(), **fields))

    def finish(self) -> None:
        """After the last epoch: relaxation off; precise batch-norm statistics if asked."""
        set_relaxation(self.network, 0.0)
        if not (self.cfg.precise_bn and self.history):
            return
        with self.autocast:
            precise_batchnorm(self.network, batches(self.train_set, self.cfg.batch_size),
                              self.device)
        record = {"batches": -(-len(cast(Sized, self.train_set)) // self.cfg.batch_size)}
        if self.val_loader is not None:
            val = evaluate(self.network, self.val_loader, self.device, operations=False)
            record.update({f"val_{key}": val[key] for key in
                           ("accuracy", "spikes_per_sample", "sparsity") if key in val})
        self.history[-1]["precise_bn"] = record
        if self.ctx.is_main:
            self.save(self.history[-1]["epoch"])
            if self.log_epochs:
                tqdm.write("precise batch-norm statistics: " + ", ".join(
                    f"{k} {v:.4g}" for k, v in record.items()))
        self.ctx.barrier()

    def fit(self) -> list[dict]:
        """Every remaining epoch, then :meth:`finish`; returns the history."""
        if not self.prepared:
            self.prepare()
        for epoch in range(self.start_epoch, self.cfg.epochs):
            record = self.validate(self.train_one_epoch(epoch))
            self.history.append(record)
            if self.ctx.is_main:
                self.save(epoch + 1)
                if self.run_dir is not None:
                    self.run_dir.log_epoch(record)
                if self.log_epochs:
                    tqdm.write(_summary(record))
                if self.on_epoch is not None:
                    self.on_epoch(record)
            self.ctx.barrier()
        self.finish()
        return self.history


def fit(network: nn.Module, train_set: Dataset, val_set: Dataset | None, cfg: TrainConfig,
        device: str | torch.device = "cpu", progress: bool = True,
        on_epoch: Callable[[dict], None] | None = None, run: RunDirectory | None = None,
        resume_from: Checkpoint | None = None, metadata: dict | None = None,
        dist_ctx: DistContext | None = None, log_epochs: bool | None = None,
        kernel_error_samples: int = KERNEL_ERROR_SAMPLES) -> list[dict]:
    """Train ``network`` for ``cfg.epochs``; return one record per epoch (see :class:`Trainer`).

    Each epoch sets the SR probability ``p_relax(e)``, switches TR/TB on from
    ``cfg.reg_start_epoch``, evaluates the TTFS network on ``val_set`` (eval mode) with its
    kernel errors on the first ``kernel_error_samples`` samples (SPEC §11) and, given a
    ``run`` folder, writes a checkpoint (weights, optimizer, scheduler, history) and a log row.
    ``resume_from`` (a :class:`~ttfs_plugin.records.Checkpoint`) continues where it stopped.
    A non-finite loss stops with :class:`TrainingDiverged` before anything of that epoch is
    saved.
    """
    trainer = Trainer(network, train_set, val_set, cfg, device, run=run, metadata=metadata,
                      dist_ctx=dist_ctx, progress=progress, log_epochs=log_epochs,
                      on_epoch=on_epoch, kernel_error_samples=kernel_error_samples)
    trainer.prepare()
    if resume_from is not None:
        trainer.restore(resume_from)
    return trainer.fit()


def _on_terminal() -> bool:
    return sys.stderr.isatty()


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


def _summary(record: dict) -> str:
    text = (f"epoch {record['epoch']}: loss {record['train_loss']:.4f} "
            f"train acc {record['train_accuracy']:.4f}")
    if "val_accuracy" in record:
        text += f" | val acc {record['val_accuracy']:.4f}"
    if "val_spikes_per_sample" in record:
        text += (f" spikes/sample {record['val_spikes_per_sample']:.0f}"
                 f" spikes/neuron {record['val_sparsity']:.4f}")
    return text + f" ({record['epoch_seconds']:.1f}s)"
