"""Suite ``gpu``: everything a user does on a GPU, checked and timed in one run (< 8 min, one GPU).

    python -m benchmarks.run --suite gpu            # on a CUDA machine (benchmarks/gpu_check.sh)
    python -m benchmarks.run --suite gpu --dry-run  # tiny sizes on CPU, CUDA-only parts skipped

Parts, each run on its own: one that fails is reported ``FAILED`` with its error and the others
still run.

* versions of everything it ran with;
* VGG-16 at full width on 32×32 inputs: TTFS and ReLU training steps side by side, fp32 and
  bf16 autocast, batch 128 and 512 — ms per step, samples/s, peak GPU memory, TTFS/ReLU ratio;
* bf16 autocast leaves the spike times where the spec says they stay: the input encoder's are the
  fp32 ones, and every TTFS layer turns its (bf16) pre-activations into spike times with float32
  thresholds;
* ``ttfs train`` one epoch on CUDA with ``--precise-bn``, then ``ttfs evaluate`` of its checkpoint
  on a process that sees no GPU (device-independent checkpoints);
* ``torchrun --nproc_per_node 1 -m ttfs_plugin train`` one epoch;
* DDP with ``TBSyncBatchNorm``: two ranks (gloo) on the one GPU check the synchronisation and the
  TB proxy; one NCCL rank runs DDP training steps under bf16;
* the snnTorch and Norse simulations on CUDA: samples/s, agreement with the surrogate in float32,
  and exact agreement in float64;
* the fused TTFS activation (Triton kernel) against the PyTorch reference, exactness and time;
* every fused or compiled path of the library against its reference (the suite lists what it
  finds in ``ttfs_plugin/``), and ``torch.compile`` of the TTFS activation (bitwise equal to
  eager) and of the whole network against eager mode.

Without CUDA and without ``--dry-run`` the suite refuses to run (so a CPU machine never writes a
"GPU" section).
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable

import torch

from .common import ROOT, goal, load_cifar_like, same_result

COLUMNS = ["part", "setting", "status", "measured", "wall (s)"]
STEP_COLUMNS = ["precision", "batch", "ReLU ms/step", "TTFS ms/step", "ratio TTFS/ReLU",
                "ReLU samples/s", "TTFS samples/s", "ReLU peak GPU memory (GiB)",
                "TTFS peak GPU memory (GiB)"]
SIM_COLUMNS = ["backend", "model", "dtype", "batch", "simulated batch (ms)",
               "simulated samples/s", "surrogate samples/s", "prediction agreement",
               "spike-time agreement", "= native loop"]
OK, SKIPPED, FAILED = "ok", "skipped (no CUDA)", "FAILED"
OVER_BUDGET = "skipped (over the time budget)"
#: no part starts after this many seconds (the suite must end within 8 minutes on one GPU)
BUDGET_S = 420
EXTRA_PACKAGES = ("snntorch", "norse", "nir", "nirtorch", "numpy", "sklearn", "torchvision",
                  "tqdm")
#: what a fused or compiled path in the library would look like
COMPILED_PATTERNS = r"torch\.compile|triton|cpp_extension|load_inline|torch\.jit\.script|" \
                    r"torch\.cuda\.graph|CUDAGraph"


class CheckFailed(AssertionError):
    """A part ran but what it checks does not hold."""


class Context:
    """Settings of one run: the full GPU run or the CPU dry run."""

    def __init__(self, dry_run: bool) -> None:
        self.dry = dry_run
        self.cuda = torch.cuda.is_available() and not dry_run
        self.device = torch.device("cuda" if self.cuda else "cpu")
        if dry_run:
            self.width, self.batches, self.warmup, self.timed = 1 / 64, (2, 4), 1, 2
            self.check_batch, self.sim_batch, self.f64_batch, self.sim_repeats = 4, 2, 2, 1
            self.threads = str(torch.get_num_threads())
        else:
            self.width, self.batches, self.warmup, self.timed = 1.0, (128, 512), 3, 10
            self.check_batch, self.sim_batch, self.f64_batch, self.sim_repeats = 128, 256, 16, 3
            self.threads = "4"
        self.tables: dict[str, list] = {"steps": [], "sim": []}

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()


# --------------------------------------------------------------------------- helpers


def _subprocess(cmd: list[str], timeout: float, env: dict | None = None) -> str:
    """Run ``cmd`` from the project root; its stdout, or an error with the end of its output."""
    full_env = dict(os.environ, PYTHONWARNINGS="ignore", **(env or {}))
    proc = subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        tail = (proc.stdout[-1500:] + "\n" + proc.stderr[-3000:]).strip()
        raise RuntimeError(f"`{' '.join(cmd[1:6])} …` exited with {proc.returncode}:\n{tail}")
    return proc.stdout


def _gib(n_bytes: int | None) -> str:
    return "–" if n_bytes is None else f"{n_bytes / 2**30:.2f}"


def _precision(ctx: Context, bf16: bool):
    return (torch.autocast(ctx.device.type, dtype=torch.bfloat16) if bf16
            else contextlib.nullcontext())


def _ttfs_layers(net) -> list[tuple[str, torch.nn.Module]]:
    from ttfs_plugin.layers import TTFSActivation
    return [(n, m) for n, m in net.named_modules() if isinstance(m, TTFSActivation)]


# --------------------------------------------------------------------------- parts


def part_versions(ctx: Context, data: dict) -> str:
    import ttfs_plugin
    versions = {"python": sys.version.split()[0], "torch": torch.__version__,
                "ttfs_plugin": ttfs_plugin.__version__, "torch_cuda": torch.version.cuda,
                "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available()
                else None}
    for name in EXTRA_PACKAGES:
        try:
            versions[name] = getattr(importlib.import_module(name), "__version__", "?")
        except Exception as exc:  # noqa: BLE001 - a missing package is what this records
            versions[name] = f"missing ({type(exc).__name__})"
    data["versions"] = versions
    data["tf32"] = {"cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
                    "matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
                    "cudnn.benchmark": torch.backends.cudnn.benchmark}
    if ctx.cuda:
        props = torch.cuda.get_device_properties(0)
        data["gpu"] = {"name": props.name, "capability": f"{props.major}.{props.minor}",
                       "memory_gib": round(props.total_memory / 2**30, 1),
                       "multiprocessors": props.multi_processor_count,
                       "count": torch.cuda.device_count()}
    gpu = (f"{data['gpu']['name']} ({data['gpu']['memory_gib']} GiB), CUDA "
           f"{versions['torch_cuda']}, cuDNN {versions['cudnn']}; " if ctx.cuda else "no GPU; ")
    return gpu + ", ".join(f"{k} {v}" for k, v in versions.items()
                           if k not in ("torch_cuda", "cudnn"))


def _training_steps(ctx: Context, activation: str, x, y, bf16: bool) -> dict:
    """Median seconds of a training step (forward, Eq. 9 loss, backward, Adam) and peak memory."""
    from ttfs_plugin.models import vgg16
    from ttfs_plugin.training import total_loss

    if ctx.cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    torch.manual_seed(0)
    net = vgg16(width=ctx.width, activation=activation).to(ctx.device).train()
    optim = torch.optim.Adam(net.parameters(), lr=1e-3)
    reg = 1e-4 if activation == "ttfs" else 0.0

    def step() -> torch.Tensor:
        with _precision(ctx, bf16):
            logits = net(x)
        loss, _ = total_loss(logits.float(), y, net, lambda_w=1e-4, lambda_tr=reg,
                             lambda_tb=reg, with_parts=False)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        return loss.detach()

    for _ in range(ctx.warmup):
        step()
    times = []
    for _ in range(ctx.timed):
        ctx.sync()
        start = time.perf_counter()
        loss = step()
        ctx.sync()
        times.append(time.perf_counter() - start)
    out = {"seconds": times, "median": statistics.median(times), "best": min(times),
           "loss": float(loss), "parameters": sum(p.numel() for p in net.parameters()),
           "peak_bytes": torch.cuda.max_memory_allocated() if ctx.cuda else None}
    if not torch.isfinite(torch.tensor(out["loss"])):
        raise CheckFailed(f"{activation} loss is not finite: {out['loss']}")
    return out


def make_step_part(bf16: bool) -> Callable[[Context, dict], str]:
    def part(ctx: Context, data: dict) -> str:
        x_all, source = load_cifar_like(max(ctx.batches))
        x_all = x_all.to(ctx.device)
        y_all = torch.randint(0, 10, (len(x_all),),
                              generator=torch.Generator().manual_seed(0)).to(ctx.device)
        data["inputs"] = source
        texts = []
        for batch in ctx.batches:
            x, y = x_all[:batch], y_all[:batch]
            r = {k: _training_steps(ctx, k, x, y, bf16) for k in ("relu", "ttfs")}
            ratio = r["ttfs"]["median"] / r["relu"]["median"]
            data[f"batch_{batch}"] = {**r, "ratio": ratio}
            name = "bf16 autocast" if bf16 else "fp32"
            ctx.tables["steps"].append([
                name, str(batch), f"{1e3 * r['relu']['median']:.1f}",
                f"{1e3 * r['ttfs']['median']:.1f}", f"{ratio:.2f}",
                f"{batch / r['relu']['median']:,.0f}", f"{batch / r['ttfs']['median']:,.0f}",
                _gib(r["relu"]["peak_bytes"]), _gib(r["ttfs"]["peak_bytes"])])
            texts.append(f"batch {batch}: TTFS {batch / r['ttfs']['median']:,.0f} samples/s, "
                         f"ReLU {batch / r['relu']['median']:,.0f}, ratio {ratio:.2f}")
        return "; ".join(texts)
    return part


def part_bf16_spike_times(ctx: Context, data: dict) -> str:
    """Spike times under bf16 autocast vs fp32 (eval mode, the same batch)."""
    from ttfs_plugin.functional import ttfs_activation
    from ttfs_plugin.kernel import encode
    from ttfs_plugin.layers import InputEncoder
    from ttfs_plugin.models import vgg16

    torch.manual_seed(0)
    net = vgg16(width=ctx.width).to(ctx.device).eval()
    x, _ = load_cifar_like(ctx.check_batch)
    x = x.to(ctx.device)
    layers = _ttfs_layers(net)
    seen: dict[str, tuple] = {}
    handles = [m.register_forward_hook(
        lambda mod, inp, out, name=name: seen.__setitem__(name, (inp[0].detach(), out.detach())))
        for name, m in layers]
    try:
        with torch.no_grad():
            logits32 = net(x)
            fp32 = dict(seen)
            with _precision(ctx, True):
                logits16 = net(x)
            bf16 = dict(seen)
    finally:
        for h in handles:
            h.remove()
    problems, same_times, total, bf16_table_diff = [], 0, 0, 0
    per_layer = []
    with torch.no_grad():
        for name, m in layers:
            z16, out16 = bf16[name]
            z32, _ = fp32[name]
            thr = m.kernel.thresholds()
            if thr.dtype != torch.float32:
                problems.append(f"{name}: thresholds are {thr.dtype}")
            if out16.dtype != torch.float32:
                problems.append(f"{name}: output under autocast is {out16.dtype}, not float32")
            # the layer under autocast = the fp32 activation of its (bf16) pre-activation
            ref = ttfs_activation(z16.float(), m.kernel.effective_tau(), m.kernel.td, m.T,
                                  m.theta0, m.grad_mode)
            if not torch.equal(out16.float(), ref):
                n = int((out16.float() != ref).sum())
                problems.append(f"{name}: {n} outputs differ from the float32-threshold "
                                "activation of the same pre-activations")
            t16, t32 = m.spike_times(z16.float()), m.spike_times(z32.float())
            if isinstance(m, InputEncoder) and not torch.equal(t16, t32):
                problems.append(f"{name} (input encoder): spike times differ from fp32")
            same = int((t16 == t32).sum())
            same_times += same
            total += t16.numel()
            # what bf16 thresholds would have done to the same pre-activations
            t_bf16_table = encode(z16.float(), thr.to(torch.bfloat16).float())
            moved = int((t_bf16_table != t16).sum())
            bf16_table_diff += moved
            per_layer.append({"layer": name, "input_dtype": str(z16.dtype),
                              "same_as_fp32": same / t16.numel(),
                              "moved_by_bf16_thresholds": moved / t16.numel()})
    agree = float((logits16.float().argmax(1) == logits32.argmax(1)).float().mean())
    data.update(per_layer=per_layer, prediction_agreement_fp32_bf16=agree,
                spike_times_same_as_fp32=same_times / total,
                spike_times_moved_by_bf16_thresholds=bf16_table_diff / total,
                problems=problems)
    if problems:
        raise CheckFailed("; ".join(problems[:5]))
    return (f"{len(layers)} TTFS layers: input encoder = fp32 exactly; every layer's spike times "
            "= float32 thresholds on its bf16 pre-activations; network-wide "
            f"{100 * same_times / total:.2f} % of spike times and {100 * agree:.1f} % of "
            "predictions as in fp32 (bf16 convolutions move the rest); bf16 thresholds would "
            f"have moved {100 * bf16_table_diff / total:.2f} %")


def _train_cmd(ctx: Context, out: Path, *extra: str) -> list[str]:
    return ["-m", "ttfs_plugin", "train", "--dataset", "digits", "--model", "cnn", "--epochs",
            "1", "--device", ctx.device.type, *extra, "--out", str(out), "--quiet"]


def part_cli_train_evaluate(ctx: Context, data: dict) -> str:
    with tempfile.TemporaryDirectory(prefix="ttfs-gpu-") as tmp:
        out = Path(tmp) / "run"
        _subprocess([sys.executable, *_train_cmd(ctx, out, "--precise-bn")], timeout=150,
                    env={"OMP_NUM_THREADS": ctx.threads})
        metrics = json.loads((out / "metrics.json").read_text())
        last = metrics["history"][-1]
        # a process that sees no GPU reads the checkpoint written on one
        text = _subprocess([sys.executable, "-m", "ttfs_plugin", "evaluate",
                            str(out / "checkpoint.pt"), "--json"], timeout=90,
                           env={"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": ctx.threads})
        evaluated = json.loads(text.strip().splitlines()[-1])
    precise = last.get("precise_bn", {})
    data.update(epoch_seconds=last["epoch_seconds"], train_accuracy=last["train_accuracy"],
                val_accuracy_on_device=last.get("val_accuracy"),
                precise_bn=precise, final_cpu=metrics["final"]["accuracy"],
                evaluate_cpu=evaluated["accuracy"], bf16=metrics["training"].get("bf16"))
    if not precise:
        raise CheckFailed("--precise-bn left no record in the history")
    if evaluated["accuracy"] != metrics["final"]["accuracy"]:
        raise CheckFailed(f"`ttfs evaluate` on CPU gives {evaluated['accuracy']:.4f}, the run's "
                          f"own CPU evaluation {metrics['final']['accuracy']:.4f}")
    on_device = precise.get("val_accuracy")
    return (f"epoch {last['epoch_seconds']:.1f} s on {ctx.device.type} "
            f"(bf16 {'on' if ctx.cuda and data['bf16'] else 'off'}); val accuracy after "
            f"precise BN {100 * on_device:.2f} % on {ctx.device.type}; checkpoint evaluated on "
            f"CPU (no GPU visible): {100 * evaluated['accuracy']:.2f} %, equal to the run's own "
            "CPU evaluation")


def part_torchrun(ctx: Context, data: dict) -> str:
    nproc = 1 if ctx.cuda else 2  # CPU: two gloo processes; one GPU holds one NCCL rank
    with tempfile.TemporaryDirectory(prefix="ttfs-gpu-") as tmp:
        out = Path(tmp) / "ddp"
        start = time.perf_counter()
        _subprocess([sys.executable, "-m", "torch.distributed.run", "--standalone",
                     "--nproc_per_node", str(nproc), *_train_cmd(ctx, out)], timeout=150,
                    env={"OMP_NUM_THREADS": ctx.threads})
        wall = time.perf_counter() - start
        metrics = json.loads((out / "metrics.json").read_text())
        checkpoints = sorted(p.name for p in out.glob("checkpoint*.pt"))
    data.update(nproc=nproc, world_size=metrics["world_size"], wall_seconds=wall,
                epoch_seconds=metrics["history"][-1]["epoch_seconds"],
                val_accuracy=metrics["final"]["accuracy"], checkpoints=checkpoints)
    if metrics["world_size"] != nproc or checkpoints != ["checkpoint.pt"]:
        raise CheckFailed(f"world size {metrics['world_size']}, checkpoints {checkpoints}")
    note = (" (world size 1: the trainer joins no process group, so NCCL and SyncBatchNorm are "
            "checked by the DDP parts below)" if nproc == 1 else " (gloo)")
    return (f"{nproc} process{'es' * (nproc > 1)}, epoch "
            f"{data['epoch_seconds']:.1f} s, val accuracy {100 * data['val_accuracy']:.2f} %"
            + note)


def _ddp(ctx: Context, data: dict, backend: str, nproc: int, bf16: bool) -> str:
    with tempfile.TemporaryDirectory(prefix="ttfs-gpu-") as tmp:
        result = Path(tmp) / "ddp.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
               str(nproc), "-m", "benchmarks.gpu_ddp", "--backend", backend, "--device",
               ctx.device.type, "--out", str(result)] + (["--bf16"] if bf16 else [])
        try:
            _subprocess(cmd, timeout=150, env={"OMP_NUM_THREADS": ctx.threads})
        finally:
            if result.exists():
                data.update(json.loads(result.read_text()))
    if data.get("problems"):
        raise CheckFailed("; ".join(data["problems"]))
    return (f"{data['world_size']} rank{'s' * (data['world_size'] > 1)} ({backend}, "
            f"{data['device']}), {data['sync_batchnorms']} SyncBatchNorm "
            f"({', '.join(sorted(set(data['tb_batchnorms'])))}); running statistics vs one "
            f"process on the whole batch: max diff {data['running_stats_max_abs_diff']:.1e}; "
            f"TB proxy {data['tb_proxy']:.4g} = {data['tb_proxy_reference']:.4g}; "
            f"{len(data['losses'])} steps{' under bf16' if bf16 else ''}, loss "
            f"{data['losses'][0]:.3f} → {data['losses'][-1]:.3f}, same weights on every rank")


def part_ddp_sync(ctx: Context, data: dict) -> str:
    # CPU (dry run): one gloo rank, no SyncBatchNorm (it needs a GPU), the same checks
    return _ddp(ctx, data, "gloo", 2 if ctx.cuda else 1, bf16=False)


def part_ddp_nccl(ctx: Context, data: dict) -> str:
    return _ddp(ctx, data, "nccl", 1, bf16=True)


def _sim_models(ctx: Context):
    from ttfs_plugin.models import small_cnn, vgg16
    if ctx.dry:
        return [("small CNN, narrow", lambda: small_cnn(T=4, channels=(4, 8), hidden=16),
                 (1, 28, 28)),
                ("VGG-16 width 1/64", lambda: vgg16(width=1 / 64, T=2), (3, 32, 32))]
    return [("small CNN", lambda: small_cnn(), (1, 28, 28)),
            ("VGG-16 width 1", lambda: vgg16(), (3, 32, 32))]


def make_sim_part(backend: str) -> Callable[[Context, dict], str]:
    def part(ctx: Context, data: dict) -> str:
        from ttfs_plugin.simulation import agreement, surrogate_spike_times
        adapter = importlib.import_module(f"ttfs_plugin.{backend}")
        convert = getattr(adapter, f"to_{backend}")
        rows, problems = [], []
        for name, build, shape in _sim_models(ctx):
            for dtype, batch in ((torch.float32, ctx.sim_batch), (torch.float64, ctx.f64_batch)):
                torch.manual_seed(0)
                model = build().to(ctx.device, dtype).eval()
                x = torch.rand(batch, *shape, generator=torch.Generator().manual_seed(1))
                x = x.to(ctx.device, dtype)
                with torch.no_grad():
                    try:
                        net = convert(model).to(ctx.device)
                    except Exception as exc:  # noqa: BLE001 - say so, then measure anyway
                        problems.append(f"{name}: converting the {ctx.device.type} model failed "
                                        f"({type(exc).__name__}: {exc}); converted a CPU copy")
                        net = convert(copy.deepcopy(model).cpu()).to(ctx.device)
                    logits, times = surrogate_spike_times(model, x)
                    result = adapter.simulate(net, x)  # warm-up, and the agreement
                    agree = agreement(result, logits, times)
                    loop = adapter.simulate(net, x, native_loop=True)  # the framework's loop
                    same = same_result(result, loop)
                    sims, surs = [], []
                    for _ in range(ctx.sim_repeats):
                        ctx.sync()
                        start = time.perf_counter()
                        adapter.simulate(net, x)
                        ctx.sync()
                        sims.append(time.perf_counter() - start)
                        start = time.perf_counter()
                        model(x)
                        ctx.sync()
                        surs.append(time.perf_counter() - start)
                device_ok = result.logits.device.type == ctx.device.type
                row = {"model": name, "dtype": str(dtype).replace("torch.", ""), "batch": batch,
                       "simulated_s": min(sims), "surrogate_s": min(surs),
                       "logits_device": str(result.logits.device),
                       "native_loop_bit_for_bit": same, **agree}
                rows.append(row)
                ctx.tables["sim"].append([
                    backend, name, row["dtype"], str(batch), f"{1e3 * row['simulated_s']:.1f}",
                    f"{batch / row['simulated_s']:,.1f}", f"{batch / row['surrogate_s']:,.0f}",
                    f"{100 * agree['agreement_with_surrogate']:.2f} %",
                    f"{100 * agree['spike_time_agreement']:.4f} %", "yes" if same else "NO"])
                if not same:
                    problems.append(f"{name} {row['dtype']}: simulate (window by window) differs "
                                    f"from the native per-step loop on {ctx.device.type}")
                if not device_ok:
                    problems.append(f"{name}: logits on {result.logits.device}")
                if dtype == torch.float64 and (agree["agreement_with_surrogate"] != 1.0
                                               or agree["spike_time_agreement"] != 1.0):
                    problems.append(f"{name} float64: agreement {agree}")
                del model, net, result, loop
        data["rows"] = rows
        if problems:
            raise CheckFailed("; ".join(problems))
        f32 = [r for r in rows if r["dtype"] == "float32"]
        return ("float64: predictions and spike times = surrogate exactly; float32: "
                + ", ".join(f"{r['model']} {r['batch'] / r['simulated_s']:,.0f} samples/s, "
                            f"spike times {100 * r['spike_time_agreement']:.3f} %" for r in f32))
    return part


def part_fused_op(ctx: Context, data: dict) -> str:
    """The fused activation (Triton on CUDA, the C kernel in the CPU dry run) against the PyTorch
    reference: spike times, ``x`` and ``dL/dz`` bit-exact, kernel gradients within 1e-6; and the
    time of forward + backward against ReLU's on one large activation."""
    from ttfs_plugin import functional as F
    from ttfs_plugin import ops
    from ttfs_plugin.kernel import threshold_table

    problems, cases = [], []
    n = 20_000 if ctx.dry else 4_000_000
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        for T, quantizer, grad_mode in ((32, "ceil", "ste"), (32, "round", "decode"),
                                        (300, "ceil", "ste")):
            gen = torch.Generator().manual_seed(T)
            thr = threshold_table(torch.tensor(6.0), torch.tensor(0.3), T, 0.9, quantizer)
            z = torch.cat([torch.rand(n, generator=gen) * 3 - 0.3, thr,
                           torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0])])
            z = z.to(dtype).to(ctx.device)
            g = torch.randn(z.shape, generator=gen).to(ctx.device)
            got = {}
            for backend in ops.BACKENDS:
                zz = z.clone().requires_grad_()
                tau = torch.tensor(6.0, device=ctx.device, requires_grad=True)
                td = torch.tensor(0.3, device=ctx.device, requires_grad=True)
                with ops.use_backend(backend):
                    used = ops.backend_for(zz.float())
                    x = F.ttfs_activation(zz, tau, td, T, 0.9, grad_mode, quantizer)
                    x.backward(g)
                got[backend] = (used, x.detach(), zz.grad, tau.grad, td.grad)
            fused, ref = got["fused"], got["reference"]
            name = f"{str(dtype)[6:]} T={T} {quantizer} {grad_mode} ({fused[0]})"
            if fused[0] == "reference":
                problems.append(f"{name}: no fused kernel ran")
            if not torch.equal(fused[1], ref[1]):
                problems.append(f"{name}: {int((fused[1] != ref[1]).sum())} values of x differ")
            if not torch.equal(fused[2], ref[2]):
                worst_dz = float((fused[2] - ref[2]).abs().max())
                problems.append(f"{name}: dL/dz differs (max {worst_dz:.2e})")
            rel = max(float((a - b).abs() / b.abs().clamp_min(1e-30))
                      for a, b in zip(fused[3:], ref[3:]))
            if rel > 1e-6:
                problems.append(f"{name}: kernel gradients differ by {rel:.1e} (relative)")
            cases.append({"case": name, "kernel_grad_rel_diff": rel})
    data["cases"] = cases

    # time: forward + backward of one large activation, fused vs reference vs ReLU
    shape = (8, 16, 32, 32) if ctx.dry else (256, 64, 32, 32)
    z = (torch.randn(*shape, device=ctx.device) * 0.5 + 0.3).requires_grad_()
    tau = torch.tensor(10.0, device=ctx.device, requires_grad=True)
    td = torch.tensor(0.0, device=ctx.device, requires_grad=True)
    g = torch.randn_like(z)

    def best(fn) -> float:
        times = []
        for _ in range(ctx.warmup + ctx.timed):
            ctx.sync()
            t0 = time.perf_counter()
            fn().backward(g)
            ctx.sync()
            times.append(time.perf_counter() - t0)
        return min(times[ctx.warmup:])

    timing = {"relu": best(lambda: torch.relu(z))}
    for backend in ops.BACKENDS:
        with ops.use_backend(backend):
            timing[backend] = best(lambda: F.ttfs_activation(z, tau, td, 32))
    data["forward_backward_seconds"] = timing
    data["shape"] = list(shape)
    if problems:
        raise CheckFailed("; ".join(problems))
    worst = max(c["kernel_grad_rel_diff"] for c in cases)
    return (f"{len(cases)} cases (fp32/fp64/bf16 input; T 32 and 300; ceil/round; ste/decode): "
            f"x, spike times and dL/dz bit-exact, kernel gradients within {worst:.1e}; "
            f"forward+backward on {tuple(shape)}: fused {1e3 * timing['fused']:.2f} ms, "
            f"reference {1e3 * timing['reference']:.2f} ms, ReLU {1e3 * timing['relu']:.2f} ms "
            f"(fused/ReLU {timing['fused'] / timing['relu']:.2f}×)")


def library_compiled_paths() -> list[str]:
    """Lines of ``ttfs_plugin/`` that compile or fuse something (empty: none exists)."""
    hits = []
    for path in sorted((ROOT / "ttfs_plugin").rglob("*.py")):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            code = re.sub(r"'[^']*'|\"[^\"]*\"", "''", line.split("#", 1)[0])  # no strings
            if re.search(COMPILED_PATTERNS, code):
                hits.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    return hits


def part_compiled(ctx: Context, data: dict) -> str:
    from ttfs_plugin.functional import ttfs_activation
    from ttfs_plugin.models import vgg16

    hits = library_compiled_paths()
    data["library_paths"] = hits
    problems = []
    # 1) torch.compile of the TTFS activation (forward and the SPEC §4 backward) vs eager
    torch.manual_seed(0)
    shape = (4, 8, 16, 16) if ctx.dry else (128, 64, 32, 32)
    z = (torch.randn(*shape, device=ctx.device) * 2).requires_grad_()
    tau = torch.tensor(10.0, device=ctx.device, requires_grad=True)
    td = torch.tensor(0.5, device=ctx.device, requires_grad=True)
    g = torch.randn_like(z)

    def run(fn):
        for t in (z, tau, td):
            t.grad = None
        x = fn(z, tau, td, 32)
        x.backward(g)
        return x.detach(), z.grad.clone(), tau.grad.clone(), td.grad.clone()

    eager = run(ttfs_activation)
    start = time.perf_counter()
    compiled_fn = torch.compile(ttfs_activation)
    compiled = run(compiled_fn)
    data["activation_compile_seconds"] = time.perf_counter() - start
    # adjacent kernel values differ by a factor exp(1/tau) (~10 %): a relative difference over
    # 1e-3 is a different spike time, anything below is rounding of the kernel table itself
    rel = (eager[0] - compiled[0]).abs() / eager[0].abs().clamp_min(1e-30)
    differ = int((rel > 1e-3).sum())
    data["activation_spike_times_differing"] = differ / z.numel()
    data["activation_outputs_not_bitwise_equal"] = int((eager[0] != compiled[0]).sum())
    data["activation_outputs_max_rel_diff"] = float(rel.max())
    data["activation_grad_rel_diff"] = {
        k: float((a - b).abs().max() / a.abs().max().clamp_min(1e-30))
        for k, a, b in zip(("z", "tau", "td"), eager[1:], compiled[1:])}
    # the tables are computed eagerly and the activation is a custom op: compiled = eager exactly
    if data["activation_outputs_not_bitwise_equal"]:
        problems.append(f"compiled TTFS activation: {data['activation_outputs_not_bitwise_equal']}"
                        f" of {z.numel()} outputs differ from eager ({differ} spike times)")
    if max(data["activation_grad_rel_diff"].values()) > 0:
        problems.append(f"compiled TTFS activation gradients: {data['activation_grad_rel_diff']}")
    # 2) torch.compile of the whole network's eval forward vs eager
    torch._dynamo.reset()
    net = vgg16(width=ctx.width).to(ctx.device).eval()
    x, _ = load_cifar_like(ctx.check_batch)
    x = x.to(ctx.device)
    def best_of_3(fn) -> float:
        best = float("inf")
        for _ in range(3):
            ctx.sync()
            t0 = time.perf_counter()
            fn(x)
            ctx.sync()
            best = min(best, time.perf_counter() - t0)
        return best

    with torch.no_grad():
        ref = net(x)
        times = {"eager": best_of_3(net)}  # before compiling: its workers share the CPU
        start = time.perf_counter()
        cnet = torch.compile(net)
        out = cnet(x)
        ctx.sync()
        data["network_compile_seconds"] = time.perf_counter() - start
        times["compiled"] = best_of_3(cnet)
    agree = float((out.argmax(1) == ref.argmax(1)).float().mean())
    data.update(network_prediction_agreement=agree,
                network_logits_max_abs_diff=float((out - ref).abs().max()),
                network_forward_seconds=times)
    if agree < 0.99:
        problems.append(f"compiled VGG-16 predicts {100 * agree:.1f} % of the batch as eager")
    data["problems"] = problems
    if problems:
        raise CheckFailed("; ".join(problems))
    lib = ("library: no fused or compiled path in ttfs_plugin/" if not hits else
           f"library: {len(hits)} compiled/fused lines (see raw)")
    return (f"{lib}; torch.compile(ttfs_activation): {differ} of {z.numel():,} spike times "
            "differ from eager, outputs and gradients bitwise equal"
            f"; torch.compile(VGG-16) eval forward: {100 * agree:.1f} % same predictions, "
            f"{1e3 * times['compiled']:.1f} ms vs eager {1e3 * times['eager']:.1f} ms "
            f"(batch {ctx.check_batch}; compile {data['network_compile_seconds']:.0f} s)")


# (key, part, setting in the full run, setting in the dry run, CUDA only)
PARTS = [
    ("versions", "versions", part_versions, "what ran", "what ran", False),
    ("vgg16_fp32", "VGG-16 training steps, fp32", make_step_part(False),
     "width 1, 32×32, batch 128 and 512", "width 1/64, batch 2 and 4, CPU", False),
    ("vgg16_bf16", "VGG-16 training steps, bf16 autocast", make_step_part(True),
     "width 1, 32×32, batch 128 and 512", "width 1/64, batch 2 and 4, CPU autocast", False),
    ("bf16_spike_times", "spike times under bf16 autocast vs fp32", part_bf16_spike_times,
     "VGG-16 width 1, eval, batch 128", "VGG-16 width 1/64, batch 4, CPU autocast", False),
    ("cli_train_evaluate", "`ttfs train --precise-bn` → `ttfs evaluate` on CPU",
     part_cli_train_evaluate, "digits, cnn, 1 epoch, --device cuda",
     "digits, cnn, 1 epoch, --device cpu", False),
    ("torchrun", "`torchrun -m ttfs_plugin train`", part_torchrun,
     "--nproc_per_node 1, --device cuda", "--nproc_per_node 2, gloo, --device cpu", False),
    ("ddp_sync_bn", "DDP + TBSyncBatchNorm synchronisation", part_ddp_sync,
     "2 ranks (gloo) on one GPU", "1 rank, gloo, CPU (no SyncBatchNorm on CPU)", False),
    ("ddp_nccl", "DDP + TBSyncBatchNorm on NCCL, bf16", part_ddp_nccl, "1 rank (NCCL)", "–",
     True),
    ("snntorch_sim", "snnTorch simulation", make_sim_part("snntorch"),
     "small CNN and VGG-16 width 1; fp32 and fp64", "tiny nets, CPU", False),
    ("norse_sim", "Norse simulation", make_sim_part("norse"),
     "small CNN and VGG-16 width 1; fp32 and fp64", "tiny nets, CPU", False),
    ("fused_op", "fused TTFS activation vs the PyTorch reference", part_fused_op,
     "Triton kernel, 4M neurons per case", "C kernel, CPU", False),
    ("compiled", "fused/compiled paths vs reference", part_compiled,
     "torch.compile of the activation and of VGG-16", "–", True),
]


def run_parts(ctx: Context, budget_s: float = BUDGET_S) -> dict[str, dict]:
    """Run every part of :data:`PARTS` in turn; one that raises is ``FAILED`` with its error."""
    parts = {}
    suite_start = time.perf_counter()
    for key, title, fn, setting, dry_setting, cuda_only in PARTS:
        rec = {"title": title, "setting": dry_setting if ctx.dry else setting, "data": {}}
        start = time.perf_counter()
        if cuda_only and not ctx.cuda:
            rec.update(status=SKIPPED, summary="")
        elif start - suite_start > budget_s:
            rec.update(status=OVER_BUDGET, summary=f"the suite had run {start - suite_start:.0f}"
                       f" s (budget {budget_s:.0f} s)")
        else:
            try:
                rec.update(status=OK, summary=fn(ctx, rec["data"]))
            except Exception as exc:  # noqa: BLE001 - one failing part must not stop the rest
                rec.update(status=FAILED, summary="", error=f"{type(exc).__name__}: {exc}",
                           traceback=traceback.format_exc()[-4000:])
            finally:
                if ctx.cuda:
                    torch.cuda.empty_cache()
        rec["seconds"] = time.perf_counter() - start
        parts[key] = rec
        print(f"[gpu] {key}: {rec['status']} ({rec['seconds']:.1f} s)"
              + (f" — {rec['error'].splitlines()[0][:300]}" if rec["status"] == FAILED else ""),
              flush=True)
    return parts


def _frac(width: float) -> str:
    return "1" if width == 1 else f"1/{round(1 / width)}"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def run(opts) -> dict:
    dry = bool(getattr(opts, "dry_run", False) or getattr(opts, "tiny", False))
    if not dry and not torch.cuda.is_available():
        raise SystemExit("the gpu suite needs CUDA; on a machine without it run "
                         "`python -m benchmarks.run --suite gpu --dry-run`")
    ctx = Context(dry)
    parts = run_parts(ctx)
    rows = []
    for rec in parts.values():
        measured = rec["summary"] if rec["status"] != FAILED else rec["error"][:600]
        status = f"**{rec['status']}**" if rec["status"] == FAILED else rec["status"]
        rows.append([rec["title"], rec["setting"], status, _cell(measured),
                     f"{rec['seconds']:.1f}"])
    failed = [k for k, r in parts.items() if r["status"] in (FAILED, OVER_BUDGET)]
    skipped = [k for k, r in parts.items() if r["status"] == SKIPPED]
    goals = [goal("every part passes (dry run: or is skipped without CUDA)", "no FAILED part",
                  f"{len(parts) - len(failed) - len(skipped)} ok, {len(skipped)} skipped, "
                  f"{len(failed)} FAILED or over the time budget"
                  + (f" ({', '.join(failed)})" if failed else ""),
                  not failed)]
    steps = parts.get("vgg16_bf16", {}).get("data", {})
    big = steps.get(f"batch_{max(ctx.batches)}")
    if big:
        goals.append(goal(f"TTFS/ReLU training-step time, VGG-16 width {_frac(ctx.width)}, "
                          f"batch {max(ctx.batches)}, bf16", "(for reference)",
                          f"{big['ratio']:.2f}× ({max(ctx.batches) / big['ttfs']['median']:,.0f}"
                          f" vs {max(ctx.batches) / big['relu']['median']:,.0f} samples/s)",
                          None))
    versions = parts["versions"]["data"].get("versions", {})
    notes = [
        "Ran with " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".",
        "How to run it: on a CUDA machine `bash benchmarks/gpu_check.sh` from the project root "
        "(it installs the project with `pip install --no-deps -e .`, leaving torch alone, and "
        "snntorch, norse, nir and nirtorch from the wheels in `.wheels/`, then runs "
        "`python -m benchmarks.run --suite gpu` and copies the results to `$OUT` when that is "
        "set). The device tool runs it as "
        "`run(command=\"bash benchmarks/gpu_check.sh\", carry=[\".wheels\"], timeout_s=480)`; "
        "`.wheels/` is filled here with `pip download --no-deps --only-binary=:all: "
        "--python-version 3.12 -d .wheels snntorch==1.0.0 nir==1.0.8 nirtorch==2.6` plus "
        "`pip wheel --no-deps -w .wheels norse==1.1.0` (Norse publishes no wheel; it builds "
        "a pure-Python one) and is never committed.",
        "Training steps: forward, Eq. 9 loss (L2 1e-4; TTFS also λ_TR and λ_TB 1e-4), backward, "
        f"Adam; {ctx.warmup} warm-up steps, then the median of {ctx.timed} timed steps "
        "(synchronised); each model in turn, so its peak memory "
        "(`torch.cuda.max_memory_allocated`, weights, Adam state and activations) is its own. "
        "bf16 = `torch.autocast('cuda', torch.bfloat16)` as the trainer uses it; PyTorch's "
        "default TF32 settings " + json.dumps(parts["versions"]["data"].get("tf32", {})) + ".",
        "Simulation rows: untrained networks at their initial kernels, random inputs; agreement "
        "= `ttfs_plugin.simulation.agreement` against `surrogate_spike_times` (float64 must be "
        "exact; float32 may move a spike whose potential lies within rounding of a threshold).",
        "A `FAILED` part shows its error here and its traceback in the raw JSON; the parts after "
        "it still ran.",
    ]
    if dry:
        notes.insert(0, "**Dry run on CPU (`--dry-run`): tiny sizes, numbers meaningless; the "
                        "CUDA-only parts are skipped.** No GPU run is recorded in this section "
                        "until `benchmarks/gpu_check.sh` runs on a GPU.")
    tables = []
    if ctx.tables["steps"]:
        tables.append({"title": f"VGG-16 training steps (width {_frac(ctx.width)}, 32×32 "
                                f"inputs: {steps.get('inputs', '')})",
                       "columns": STEP_COLUMNS, "rows": ctx.tables["steps"]})
    if ctx.tables["sim"]:
        tables.append({"title": f"snnTorch and Norse simulations on {ctx.device.type}",
                       "columns": SIM_COLUMNS, "rows": ctx.tables["sim"]})
    return {"title": "5. GPU: training, bf16, DDP, checkpoints and simulation on CUDA",
            "columns": COLUMNS, "rows": rows, "tables": tables, "goals": goals,
            "notes": notes,
            "parts": {k: {"status": r["status"], "seconds": r["seconds"],
                          **({"error": r["error"]} if "error" in r else {})}
                      for k, r in parts.items()},
            "raw": {"dry_run": dry, "device": str(ctx.device), "parts": parts}}
