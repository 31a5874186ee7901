"""Shared pieces of the benchmark suites: machine description, data, timing, fresh-process
workers, and the markdown/JSON writers.

Every suite module has ``run(opts) -> dict`` returning::

    {"title", "command", "columns", "rows", "notes", "goals", "raw"}

``rows`` are lists of cell strings (one per column); ``goals`` are dicts with ``goal``, ``target``,
``measured``, ``status`` ("met" / "MISSED" / "n/a") and ``why``; ``raw`` is the measured data
(JSON-able) that the table was made from. An optional ``tables`` (a list of dicts with ``title``,
``columns`` and ``rows``) adds further tables after the main one.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import TensorDataset

ROOT = Path(__file__).resolve().parents[1]
SUITES = ("train", "sim", "ablation", "scale")  # the CPU suites: what ``--suite all`` runs
#: every section of docs/benchmarks.md, in order (``ablation-deep`` is a CPU suite too, but at
#: about 30 minutes it stays out of ``all``)
SECTIONS = ("train", "sim", "ablation", "ablation-deep", "scale", "gpu")
TITLES = {
    "train": "1. Training: ReLU DNN, surrogate TTFS, snnTorch and Norse trained through time",
    "sim": "2. Simulation: exported network in snnTorch and Norse vs one surrogate forward pass",
    "ablation": "3. Ablation (paper's Table 1) on mnist9k",
    "ablation-deep": "3b. Ablation (paper's Table 1) on a deep net: VGG-16 at reduced width",
    "scale": "4. Scaling: surrogate training cost as VGG-16 widens",
    "gpu": "5. GPU: training, bf16, DDP, checkpoints and simulation on CUDA",
}


# --------------------------------------------------------------------------- machine


def machine_info() -> dict:
    """Platform, cores, threads, library versions, device and load at the time of the call."""
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": (f"cuda ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available()
                   else "cpu"),
        "loadavg_at_start": [round(v, 2) for v in os.getloadavg()],
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    for name in ("snntorch", "norse"):
        try:
            info[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - a missing extra only drops the version
            info[name] = None
    return info


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def threads_text() -> str:
    n = torch.get_num_threads()
    return f"{n} CPU thread{'s' * (n != 1)}"


def describe_machine(info: dict) -> str:
    cpu = info.get("cpu_model") or info.get("processor")
    threads = info["torch_threads"]
    text = (f"{info['cores']} CPU cores ({cpu}), {threads} torch thread{'s' * (threads != 1)}, "
            f"device {info['device']}, Python {info['python']}, torch {info['torch']}")
    extras = [f"{n} {info[n]}" for n in ("snntorch", "norse") if info.get(n)]
    if extras:
        text += ", " + ", ".join(extras)
    return text


# --------------------------------------------------------------------------- data


def data_root() -> Path:
    """``TTFS_DATA_DIR`` or ``../shared/data`` (as the tests find it)."""
    return Path(os.environ.get("TTFS_DATA_DIR", ROOT.parent / "shared" / "data")).resolve()


def load_mnist9k(synthetic_ok: bool = False) -> tuple[TensorDataset, TensorDataset, str]:
    """mnist9k: train = images 0–7,999, val = 8,000–8,999 (docs/results.md's split).

    With ``synthetic_ok`` (the ``--tiny`` smoke setting) and no data on disk, random images of
    the same shape stand in, so the scripts still run end to end in CI.
    """
    path = data_root() / "mnist9k"
    if path.is_dir():
        from ttfs_plugin.data import load_dataset
        data = load_dataset("mnist-idx", str(path))
        return data.train, data.val, f"mnist9k ({path})"
    if not synthetic_ok:
        raise FileNotFoundError(f"mnist9k not found at {path}; set TTFS_DATA_DIR")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1200, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (1200,), generator=g)
    return (TensorDataset(x[:1000], y[:1000]), TensorDataset(x[1000:], y[1000:]),
            "synthetic 28×28 images (mnist9k not found)")


def load_cifar_like(n: int, synthetic_ok: bool = True) -> tuple[torch.Tensor, str]:
    """``n`` 32×32 RGB images: cifar10_200 when present (repeated as needed), else random."""
    path = data_root() / "cifar10_200"
    if path.is_dir():
        try:
            from ttfs_plugin.data import load_dataset
            data = load_dataset("image-folder", str(path))
            x = torch.cat([data.train.tensors[0], data.val.tensors[0]])
            reps = -(-n // len(x))
            return x.repeat(reps, 1, 1, 1)[:n].contiguous(), f"cifar10_200 ({path})"
        except Exception as exc:  # noqa: BLE001 - fall back to random inputs, say so
            source = f"random 32×32 RGB (cifar10_200 unreadable: {exc})"
    else:
        source = "random 32×32 RGB (cifar10_200 not found)"
    if not synthetic_ok:
        raise FileNotFoundError(source)
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(0)), source


def subset(dataset: TensorDataset, n: int | None) -> TensorDataset:
    """The first ``n`` samples (all of them for ``None``)."""
    if n is None or n >= len(dataset):
        return dataset
    return TensorDataset(*(t[:n] for t in dataset.tensors))


# --------------------------------------------------------------------------- timing, memory


def best_time(fn: Callable[[], object], repeats: int,
              clock: Callable[[], float] = time.perf_counter) -> float:
    """Smallest time of ``repeats`` calls (the least disturbed by other jobs), by ``clock``:
    wall time, or ``time.thread_time`` for one thread's CPU time."""
    times = []
    for _ in range(max(1, repeats)):
        start = clock()
        fn()
        times.append(clock() - start)
    return min(times)


def activation_hooks(net) -> tuple[list[float], list]:
    """Hooks adding the forward+backward time spent inside the TTFS activations (input encoder
    included) to ``spent[0]``; remove the returned handles when done."""
    from ttfs_plugin.layers import TTFSActivation
    spent = [0.0]
    stamps = {}

    def pre(module, inputs):
        stamps[id(module)] = time.perf_counter()

    def post(module, inputs, output):
        start = stamps.pop(id(module), None)
        if start is not None:
            spent[0] += time.perf_counter() - start

    handles = []
    for m in net.modules():
        if isinstance(m, TTFSActivation):
            handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post),
                        m.register_full_backward_pre_hook(pre),
                        m.register_full_backward_hook(post)]
    return spent, handles


def compare_steps(nets: dict, batch_at: Callable[[int], tuple], repeats: int,
                  lambda_tr: float, lambda_tb: float,
                  contexts: dict[str, Callable[[], contextlib.AbstractContextManager]] | None
                  = None) -> dict:
    """Time training steps (forward, Eq. 9 loss, backward, Adam) of ``nets["relu"]``,
    ``nets["ttfs"]`` and any other TTFS variant in ``nets`` (a name starting ``ttfs``) on the same
    batches ``batch_at(i)``, alternated so all see the same machine load; best of ``repeats``
    after a warm-up, plus the activations' share of one extra, hooked TTFS step (hooks add
    overhead, so they stay out of the timed steps). ``contexts[kind]()`` wraps that net's steps
    (e.g. ``ttfs_plugin.ops.use_backend("reference")``)."""
    from ttfs_plugin.training import total_loss

    optim = {k: torch.optim.Adam(n.parameters(), lr=1e-3) for k, n in nets.items()}
    contexts = contexts or {}

    def step(kind: str, i: int) -> None:
        x, y = batch_at(i)
        net = nets[kind]
        reg = kind.startswith("ttfs")
        with contexts.get(kind, contextlib.nullcontext)():
            loss, _ = total_loss(net(x), y, net, lambda_w=1e-4,
                                 lambda_tr=lambda_tr if reg else 0.0,
                                 lambda_tb=lambda_tb if reg else 0.0, with_parts=False)
            optim[kind].zero_grad(set_to_none=True)
            loss.backward()
            optim[kind].step()

    for kind in nets:  # warm-up
        step(kind, 0)
    times: dict[str, list[float]] = {k: [] for k in nets}
    for i in range(1, repeats + 1):
        for kind in nets:
            start = time.perf_counter()
            step(kind, i)
            times[kind].append(time.perf_counter() - start)
    best = {k: min(v) for k, v in times.items()}
    spent, handles = activation_hooks(nets["ttfs"])
    with warnings.catch_warnings():  # the encoder's input needs no grad: hooks still fire
        warnings.filterwarnings("ignore", "Full backward hook is firing")
        start = time.perf_counter()
        step("ttfs", 1)
        hooked = time.perf_counter() - start
    for h in handles:
        h.remove()
    return {"repeats": repeats, "seconds": times, "best": best,
            "ratio": best["ttfs"] / best["relu"],
            "ratios": {k: best[k] / best["relu"] for k in nets if k != "relu"},
            "activation_share": spent[0] / hooked,
            "hooked_step_seconds": hooked, "activation_seconds": spent[0],
            "threads": torch.get_num_threads()}


def same_result(a, b) -> bool:
    """Two simulation results with the same logits and spike times, bit for bit."""
    return (a.logits.dtype == b.logits.dtype and torch.equal(a.logits, b.logits)
            and a.spike_times.keys() == b.spike_times.keys()
            and all(torch.equal(a.spike_times[n], b.spike_times[n]) for n in a.spike_times))


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def run_worker(payload: dict | list, timeout: float | None = None) -> dict | list:
    """Run ``benchmarks.worker`` on ``payload`` (one job, or a list of jobs run one after
    another) in a fresh Python process; return its result(s).

    A fresh process per method keeps the peak-memory figures (``ru_maxrss``) from mixing.
    """
    with tempfile.TemporaryDirectory(prefix="ttfs-bench-") as tmp:
        src, dst = Path(tmp) / "in.json", Path(tmp) / "out.json"
        src.write_text(json.dumps(payload))
        env = dict(os.environ, PYTHONWARNINGS="ignore")
        proc = subprocess.run([sys.executable, "-m", "benchmarks.worker", str(src), str(dst)],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0 or not dst.exists():
            what = payload.get("method") if isinstance(payload, dict) else "jobs"
            raise RuntimeError(f"worker ({what}) failed (rc {proc.returncode}):\n"
                               f"{proc.stderr[-4000:]}")
        return json.loads(dst.read_text())


# --------------------------------------------------------------------------- formatting


def fmt(value, digits: int = 2, pct: bool = False) -> str:
    """A table cell: ``–`` for None, thousands separators, ``%`` for fractions."""
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    if pct:
        return f"{100 * value:.{digits}f} %"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()
                                  and abs(value) >= 100):
        return f"{int(value):,}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def mean_std(values: list[float]) -> tuple[float, float]:
    t = torch.tensor(values, dtype=torch.float64)
    return float(t.mean()), float(t.std()) if len(values) > 1 else 0.0


def goal(goal: str, target: str, measured: str, met: bool | None, why: str = "") -> dict:
    status = "n/a" if met is None else ("met" if met else "MISSED")
    return {"goal": goal, "target": target, "measured": measured, "status": status, "why": why}


# --------------------------------------------------------------------------- writers


def section_markdown(suite: str, result: dict, machine: dict, wall: float,
                     json_name: str) -> str:
    """The markdown of one suite's section, between its ``<!-- suite:NAME -->`` markers."""
    lines = [f"<!-- suite:{suite} -->", f"## {result['title']}", "",
             "```", result["command"], "```", "",
             f"Measured {machine['date_utc']} on {describe_machine(machine)}; load average at "
             f"start {'/'.join(str(v) for v in machine['loadavg_at_start'])} (the cores are "
             f"shared with other jobs{_threads_note(machine)}); suite wall time {wall:.0f} s. "
             f"Raw data: [`{json_name}`](benchmarks/{json_name}).", ""]
    cols = result["columns"]
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in result["rows"]]
    for table in result.get("tables", []):
        tcols = table["columns"]
        lines += ["", f"**{table['title']}**", "",
                  "| " + " | ".join(tcols) + " |", "|" + "---|" * len(tcols)]
        lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in table["rows"]]
    if result.get("goals"):
        lines += ["", "**Goals** (ratios measured in this run):", "",
                  "| goal | target | measured | status | why |", "|---|---|---|---|---|"]
        lines += [f"| {g['goal']} | {g['target']} | {g['measured']} | "
                  f"{'**' + g['status'] + '**' if g['status'] == 'MISSED' else g['status']} | "
                  f"{g['why'] or ''} |" for g in result["goals"]]
    if result.get("notes"):
        lines += ["", "Notes:", ""] + [f"* {n}" for n in result["notes"]]
    lines += ["", f"<!-- /suite:{suite} -->"]
    return "\n".join(lines)


def _threads_note(machine: dict) -> str:
    if machine["torch_threads"] >= (machine["cores"] or 1):
        return ""
    return (f", so every process ran torch on {machine['torch_threads']} thread"
            f"{'s' * (machine['torch_threads'] != 1)} (`--threads`): with a thread per core, "
            "each parallel op waits at its barrier for a thread the other jobs have descheduled, "
            "which slows and scatters the timings")


HEADER = """# Benchmarks

Generated by `python -m benchmarks.run --suite NAME` (`train`, `sim`, `ablation`, `scale` or
`all`, which runs those four; `ablation-deep` on its own, about 30 minutes; `gpu` runs on a CUDA
machine, see its section); each suite rewrites
only its own section below and its raw JSON in [`docs/benchmarks/`](benchmarks/). Every number is
measured by the command shown in its section; a goal that is missed says so, and why.
`pytest tests/test_benchmarks.py` runs every suite on a tiny setting (`--tiny`, or the GPU
suite's `--dry-run` on CPU, into a temporary folder) so the scripts cannot rot.

Machine of the last run: {machine}.
"""


def write_section(md_path: Path, suite: str, result: dict, machine: dict, wall: float,
                  json_name: str) -> None:
    """(Re)write ``suite``'s section of ``md_path``, keeping every other suite's section."""
    md_path = Path(md_path)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    old = md_path.read_text() if md_path.exists() else ""
    sections = {}
    for name in SECTIONS:
        m = re.search(rf"<!-- suite:{name} -->.*?<!-- /suite:{name} -->", old, re.S)
        if m:
            sections[name] = m.group(0)
    sections[suite] = section_markdown(suite, result, machine, wall, json_name)
    body = [HEADER.format(machine=describe_machine(machine)).rstrip()]
    for name in SECTIONS:
        body.append(sections.get(name) or
                    f"<!-- suite:{name} -->\n## {TITLES[name]}\n\nNot run yet: "
                    f"`python -m benchmarks.run --suite {name}`.\n<!-- /suite:{name} -->")
    md_path.write_text("\n\n".join(body) + "\n")


def write_json(json_dir: Path, suite: str, result: dict, machine: dict, wall: float,
               options: dict) -> Path:
    json_dir = Path(json_dir)
    json_dir.mkdir(parents=True, exist_ok=True)
    path = json_dir / f"{suite}.json"
    payload = {"suite": suite, "machine": machine, "wall_seconds": wall, "options": options,
               **result}
    path.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    return path
