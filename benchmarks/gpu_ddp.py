"""One rank of the GPU suite's DDP check (run under ``torchrun``; rank 0 writes ``--out``).

    python -m torch.distributed.run --standalone --nproc_per_node N -m benchmarks.gpu_ddp \\
        --backend nccl|gloo --device cuda|cpu [--bf16] --out RESULT.json

Every rank builds the same small CNN (seed 0) and takes its slice of the same batch. On CUDA the
batch norms become synchronised ones with :func:`ttfs_plugin.training.distributed.
convert_sync_batchnorm` (TB batch norms must stay TB: ``TBSyncBatchNorm``), the way the trainer
does under ``torchrun``. Checks:

* after one train-mode forward, every batch norm's running statistics equal those of the
  unconverted network on the whole batch in one process (with more than one rank this is the
  synchronisation itself; one GPU can hold several ranks only with gloo, NCCL refuses that);
* the TB spike proxy (``spike_proxy_loss``) of the converted network equals the original's;
* a few DDP training steps (Eq. 9 loss with TR and TB, bf16 autocast with ``--bf16``) give a finite
  loss and leave the same weights on every rank.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_ddp")
    p.add_argument("--backend", choices=["nccl", "gloo"], required=True)
    p.add_argument("--device", choices=["cuda", "cpu"], required=True)
    p.add_argument("--bf16", action="store_true", help="bf16 autocast in the training steps")
    p.add_argument("--batch", type=int, default=16, help="samples per rank")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    from ttfs_plugin.layers import _TBBatchNorm
    from ttfs_plugin.models import small_cnn
    from ttfs_plugin.training import total_loss
    from ttfs_plugin.training.distributed import TBSyncBatchNorm, convert_sync_batchnorm
    from ttfs_plugin.training.losses import spike_proxy_loss

    dist.init_process_group(args.backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    cuda = args.device == "cuda"
    if cuda:  # one GPU: every rank on device 0
        torch.cuda.set_device(0)
    device = torch.device("cuda", 0) if cuda else torch.device("cpu")
    out: dict = {"backend": args.backend, "device": str(device), "world_size": world,
                 "bf16": args.bf16}
    try:
        torch.manual_seed(0)
        ref = small_cnn(channels=(8, 16), hidden=32).to(device)
        net = copy.deepcopy(ref)
        if cuda:
            net = convert_sync_batchnorm(net)
        out["tb_batchnorms"] = [type(m).__name__ for m in net.modules()
                                if isinstance(m, _TBBatchNorm)]
        out["sync_batchnorms"] = sum(isinstance(m, nn.SyncBatchNorm) for m in net.modules())
        if cuda and not all(isinstance(m, TBSyncBatchNorm) for m in net.modules()
                            if isinstance(m, _TBBatchNorm)):
            raise AssertionError(f"TB batch norms lost their TB class: {out['tb_batchnorms']}")
        if not out["tb_batchnorms"]:
            raise AssertionError("the network has no TB batch norm to check")
        model = nn.parallel.DistributedDataParallel(
            net, device_ids=[0] if cuda else None, find_unused_parameters=True)

        g = torch.Generator().manual_seed(1)
        x = torch.rand(args.batch * world, 1, 28, 28, generator=g).to(device)
        y = torch.randint(0, 10, (args.batch * world,), generator=g).to(device)
        mine = slice(rank * args.batch, (rank + 1) * args.batch)

        # 1) batch statistics over all ranks = one process over the whole batch
        model.train()
        ref.train()
        with torch.no_grad():
            model(x[mine])
            ref(x)
        bn = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        bn_ref = [m for m in ref.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        diffs = [max((a.running_mean - b.running_mean).abs().max().item(),
                     (a.running_var - b.running_var).abs().max().item())
                 for a, b in zip(bn, bn_ref)]
        out["running_stats_max_abs_diff"] = max(diffs)
        # 2) the TB proxy survives the conversion
        tb, tb_ref = spike_proxy_loss(net).item(), spike_proxy_loss(ref).item()
        out["tb_proxy"], out["tb_proxy_reference"] = tb, tb_ref

        # 3) DDP training steps
        optim = torch.optim.Adam(net.parameters(), lr=1e-3)
        autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if args.bf16
                    else contextlib.nullcontext())
        losses = []
        for _ in range(args.steps):
            with autocast:
                logits = model(x[mine])
            loss, _ = total_loss(logits.float(), y[mine], net, lambda_w=1e-4, lambda_tr=1e-4,
                                 lambda_tb=1e-4, with_parts=False)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            losses.append(loss.item())
        out["losses"] = losses
        flat = torch.cat([q.detach().float().flatten() for q in net.parameters()])
        gathered = [torch.empty_like(flat) for _ in range(world)]
        dist.all_gather(gathered, flat)
        out["weights_max_abs_diff_between_ranks"] = max(
            (t - gathered[0]).abs().max().item() for t in gathered)

        problems = []
        if out["running_stats_max_abs_diff"] > 1e-4:
            problems.append(f"running statistics differ from one process on the whole batch "
                            f"by {out['running_stats_max_abs_diff']:.3g}")
        if not math.isclose(tb, tb_ref, rel_tol=1e-5, abs_tol=1e-6):
            problems.append(f"TB proxy {tb:.6g} after conversion vs {tb_ref:.6g} before")
        if not all(math.isfinite(v) for v in losses):
            problems.append(f"non-finite loss {losses}")
        if out["weights_max_abs_diff_between_ranks"] != 0:
            problems.append("ranks hold different weights after the steps "
                            f"({out['weights_max_abs_diff_between_ranks']:.3g})")
        out["problems"] = problems
    except Exception as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        if rank == 0:
            Path(args.out).write_text(json.dumps(out))
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
