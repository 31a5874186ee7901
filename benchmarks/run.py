"""Run a benchmark suite and write its table into docs/benchmarks.md (+ raw JSON).

    python -m benchmarks.run --suite train|sim|ablation|ablation-deep|scale|all|gpu
                             [--tiny|--dry-run] [options]

Each suite (re)writes only its own section of ``--out-md`` (between ``<!-- suite:NAME -->``
markers) and ``--json-dir/NAME.json``. ``--tiny`` is the CI smoke setting (seconds): without an
explicit ``--out-md``/``--json-dir`` it writes into a fresh temporary folder, never into docs/.
``all`` runs the four CPU suites (not ``ablation-deep``: about 30 minutes on its own); ``gpu``
needs CUDA (``benchmarks/gpu_check.sh`` sets up a bare GPU machine and runs it); ``--dry-run`` (or
``--tiny``) is its CPU smoke run at tiny sizes.
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys
import tempfile
import time
from pathlib import Path

from .common import ROOT, SECTIONS, SUITES, machine_info, write_json, write_section


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run",
                                description=__doc__.splitlines()[0])
    p.add_argument("--suite", required=True, choices=SECTIONS + ("all",))
    p.add_argument("--tiny", action="store_true",
                   help="CI smoke setting: tiny data, 1 epoch, few batches (numbers meaningless)")
    p.add_argument("--dry-run", action="store_true",
                   help="gpu: tiny sizes on CPU, the CUDA-only parts reported as skipped (like "
                   "--tiny, it writes into a temporary folder unless --out-md is given)")
    p.add_argument("--epochs", type=int,
                   help="epochs per training run (default: train 3, ablation 4, ablation-deep 12)")
    p.add_argument("--seeds", type=int, default=3, help="ablation: seeds per configuration")
    p.add_argument("--peer-train", type=int, default=2048,
                   help="train: training images for the snnTorch/Norse BPTT peers (and the "
                   "matching rows of ours)")
    p.add_argument("--peer-steps", type=int, help="train: the peers' time steps (default 25)")
    p.add_argument("--step-repeats", type=int, default=10,
                   help="train: timed training steps per method for the per-step ratio")
    p.add_argument("--ablation-train", type=int, default=2048,
                   help="ablation: training images per run")
    p.add_argument("--ablation-batch", type=int, default=32, help="ablation: batch size")
    p.add_argument("--deep-train", type=int, default=2048,
                   help="ablation-deep: training images per run")
    p.add_argument("--deep-batch", type=int, default=32, help="ablation-deep: batch size")
    p.add_argument("--deep-width", type=float, default=0.125,
                   help="ablation-deep: VGG-16 width multiplier")
    p.add_argument("--quantizers", default="ceil,round",
                   help="ablation-deep: comma-separated quantizers (ceil, round)")
    p.add_argument("--sim-batch", type=int, default=64, help="sim: batch size")
    p.add_argument("--scale-batch", type=int, default=64, help="scale: batch size")
    p.add_argument("--repeats", type=int, default=3, help="sim: timed repeats (best of)")
    p.add_argument("--scale-repeats", type=int, default=5,
                   help="scale: timed steps per method and width (best of)")
    p.add_argument("--threads", type=int,
                   help="torch threads in every process (default: torch's own, one per core; "
                   "--tiny: 1)")
    p.add_argument("--out-md", help="markdown file (default docs/benchmarks.md; with --tiny a "
                   "temporary folder)")
    p.add_argument("--json-dir", help="raw JSON folder (default docs/benchmarks; with --tiny "
                   "next to --out-md)")
    return p


def command_for(suite: str, argv: list[str]) -> str:
    """The command line that regenerates ``suite`` (output paths dropped)."""
    out, skip = [], False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg in ("--out-md", "--json-dir"):
            skip = True
            continue
        if arg.startswith(("--out-md=", "--json-dir=")):
            continue
        if arg == "--suite" and i + 1 < len(argv):
            out += ["--suite", suite]
            skip = True
            continue
        if arg.startswith("--suite="):
            out.append(f"--suite={suite}")
            continue
        out.append(arg)
    return "python -m benchmarks.run " + " ".join(shlex.quote(a) for a in out)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    opts = build_parser().parse_args(argv)
    smoke = opts.tiny or opts.dry_run
    if smoke and opts.threads is None:
        opts.threads = 1  # tiny ops on a shared machine: OpenMP barriers only add waiting
    if opts.threads:
        import torch
        torch.set_num_threads(opts.threads)
    if smoke and opts.out_md is None:
        opts.out_md = str(Path(tempfile.mkdtemp(prefix="ttfs-bench-tiny-")) / "benchmarks.md")
    md = Path(opts.out_md or ROOT / "docs" / "benchmarks.md")
    json_dir = Path(opts.json_dir) if opts.json_dir else (
        md.parent / "benchmarks" if smoke or opts.out_md else ROOT / "docs" / "benchmarks")
    suites = SUITES if opts.suite == "all" else (opts.suite,)
    for suite in suites:
        machine = machine_info()
        start = time.perf_counter()
        module = importlib.import_module(f"benchmarks.suite_{suite.replace('-', '_')}")
        result = module.run(opts)
        wall = time.perf_counter() - start
        result["command"] = command_for(suite, argv)
        path = write_json(json_dir, suite, result, machine, wall,
                          {k: v for k, v in vars(opts).items()})
        write_section(md, suite, result, machine, wall, path.name)
        status = ", ".join(f"{g['goal']}: {g['status']}" for g in result.get("goals", []))
        print(f"[{suite}] {wall:.0f} s → {md} ({path}); {status}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
