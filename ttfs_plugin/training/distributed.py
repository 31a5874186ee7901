"""Distributed data-parallel training with PyTorch's own engine (``torchrun``).

``torchrun --nproc_per_node N -m ttfs_plugin train …`` sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``;
:func:`setup` then joins the process group (NCCL on GPU, gloo on CPU). Multi-node runs work the
way torchrun documents (``--nnodes``, ``--rdzv-endpoint``). Rank 0 logs and writes checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ..layers import _TBBatchNorm


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def setup(device: torch.device) -> DistContext:
    """Join the process group torchrun prepared (no-op for a single process)."""
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return DistContext()
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    ctx = DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    if device.type == "cuda":
        torch.cuda.set_device(ctx.local_rank)
    return ctx


def device_for(ctx: DistContext, device: torch.device) -> torch.device:
    """Each process of a multi-GPU run takes the GPU of its local rank."""
    if device.type == "cuda" and ctx.enabled:
        return torch.device("cuda", ctx.local_rank)
    return device


def teardown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


class TBSyncBatchNorm(_TBBatchNorm, nn.SyncBatchNorm):
    """Synchronised batch norm that keeps the TB spike proxy (GPU only, as SyncBatchNorm)."""

    def forward(self, x):
        self._remember_positions(x)
        return super().forward(x)


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Like ``nn.SyncBatchNorm.convert_sync_batchnorm``, but TB batch norms stay TB."""
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        cls = TBSyncBatchNorm if isinstance(module, _TBBatchNorm) else nn.SyncBatchNorm
        out = cls(module.num_features, module.eps, module.momentum, module.affine,
                  module.track_running_stats)
        if module.affine:
            with torch.no_grad():
                out.weight = module.weight
                out.bias = module.bias
        out.running_mean = module.running_mean
        out.running_var = module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.training = module.training
    for name, child in module.named_children():
        out.add_module(name, convert_sync_batchnorm(child))
    return out
