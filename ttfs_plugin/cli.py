"""The ``ttfs`` command: ``ttfs train``, ``evaluate``, ``export`` and ``plot``.

Errors the user can fix (unknown names, bad values, missing data, damaged checkpoints) end the
command with one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from . import __version__
from .checkpoint import load_checkpoint
from .data import DATASETS, SPLITS, add_data_arguments, dataset_options, load_dataset
from .errors import CheckpointError, ConfigError, TTFSError
from .functional import GRAD_MODES, SPIKE_PROXY_MODES
from .metrics import evaluate
from .models import MODELS, NetworkConfig, TTFSNetwork, get_model
from .plot_cli import add_plot_parser, run_plot
from .simulation import BACKENDS, evaluate_backend, evaluate_simulated, load_adapter
from .training import (
    PRESETS,
    RunDirectory,
    TrainConfig,
    batches,
    distributed,
    fit,
    get_preset,
    seed_everything,
    td_for_x_max,
)

DEFAULT_MODEL = {"digits": "mlp"}  # every other dataset: "cnn"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ttfs", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"ttfs-plugin {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a TTFS network through the surrogate model")
    train.add_argument("--dataset", default="digits", help=f"one of {sorted(DATASETS)}")
    train.add_argument("--data-dir", help="folder holding the dataset's files")
    train.add_argument("--model", help=f"one of {sorted(MODELS)} (default: mlp for digits, "
                       "cnn otherwise)")
    train.add_argument("--preset", default="sm+sr+tr+tb", help=f"one of {list(PRESETS)}")
    train.add_argument("--out", required=True, help="run folder for checkpoint.pt, metrics.json")
    train.add_argument("--overwrite", action="store_true",
                       help="replace a checkpoint already in --out")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in --out from its last checkpoint")
    train.add_argument("--config", help="TOML file of flag values (see configs/); flags given "
                       "on the command line override it")
    train.add_argument("--activation", choices=["ttfs", "relu"], default="ttfs",
                       help="relu trains the plain DNN of the same architecture (baseline)")
    g = train.add_argument_group("training (unset flags take the preset's value)")
    g.add_argument("--epochs", type=int, help="default 20 (with --resume: the run's own)")
    g.add_argument("--batch-size", type=int, default=128)
    g.add_argument("--lr", type=float, default=1e-3)
    g.add_argument("--lr-schedule", choices=["cosine", "step", "none"], default="cosine")
    g.add_argument("--lr-step", type=int, default=30, help="step schedule: epochs per step")
    g.add_argument("--lr-gamma", type=float, default=0.1, help="step schedule: factor")
    g.add_argument("--lambda-w", type=float, default=1e-4, help="L2 weight (paper: 1e-4)")
    g.add_argument("--lambda-tr", type=float, help="kernel regularisation weight")
    g.add_argument("--lambda-tb", type=float, help="TB spike-proxy weight")
    g.add_argument("--tb-mode", choices=SPIKE_PROXY_MODES, default="exact")
    g.add_argument("--sr-target", type=int, help="SR target epoch (0 = off; default: epochs/4)")
    g.add_argument("--reg-start", type=int, help="epoch TR and TB start (default: SR target)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, "
                   "cuda:1 …; under torchrun each process takes its local rank's GPU")
    g.add_argument("--no-bf16", action="store_true", help="no bf16 autocast on CUDA")
    g.add_argument("--precise-bn", action="store_true",
                   help="after the last epoch, recompute batch-norm statistics over the "
                        "training set with the final weights")
    k = train.add_argument_group("kernel and model")
    k.add_argument("--T", type=int, default=32, help="time window per layer")
    k.add_argument("--tau0", type=float, default=10.0)
    k.add_argument("--td0", type=float, help="initial delay (default: from --x-max0)")
    k.add_argument("--x-max0", type=float, help="initial x_max = exp(td0/tau0) (preset)")
    k.add_argument("--theta0", type=float, default=1.0)
    k.add_argument("--grad-mode", choices=GRAD_MODES, default="ste")
    k.add_argument("--width", type=float, help="vgg16 width multiplier")
    k.add_argument("--pool", choices=["max", "avg"], help="pooling of cnn and vgg16")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    add_data_arguments(train.add_argument_group("dataset options"))

    ev = sub.add_parser("evaluate", help="accuracy and efficiency figures of a checkpoint "
                        "(or of a .nir file written by 'ttfs export --backend nir')")
    ev.add_argument("checkpoint", help="checkpoint.pt, its run folder, or a .nir file")
    ev.add_argument("--dataset", help="default: the one it was trained on")
    ev.add_argument("--data-dir", help="default: the one it was trained with")
    ev.add_argument("--split", choices=SPLITS, default="val")
    ev.add_argument("--batch-size", type=int, default=512)
    ev.add_argument("--energy-ref", default="cifar10",
                    help="cifar10, cifar100 or 'SPIKES,STEPS' (energy normalisation)")
    ev.add_argument("--backend", choices=("surrogate",) + BACKENDS, default="surrogate",
                    help="surrogate (eval-mode DNN) or a time-stepped simulation in snnTorch "
                    "or Norse, which also reports its agreement with the surrogate")
    ev.add_argument("--json", action="store_true", help="print one JSON object")

    ex = sub.add_parser("export", help="convert a checkpoint into an snnTorch or Norse network, "
                        "or a NIR graph")
    ex.add_argument("checkpoint")
    ex.add_argument("--backend", choices=BACKENDS + ("nir",), required=True,
                    help="snntorch or norse (a torch file for ttfs_plugin.<backend>.load), or "
                    "nir (a NIR graph for ttfs_plugin.nir.from_nir, docs/nir.md)")
    ex.add_argument("--out", required=True, help="file to write")
    ex.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    add_plot_parser(sub)
    return parser


def _train(args: argparse.Namespace) -> int:
    out = Path(args.out)
    device = _device(args.device)
    ctx = distributed.setup(device)
    device = distributed.device_for(ctx, device)
    try:
        if args.resume:
            network, data, cfg, meta, resume_from = _resume_setup(args, out)
        else:
            network, data, cfg, meta = _new_run_setup(args, out, ctx)
            resume_from = None
        run = RunDirectory(out) if ctx.is_main else None
        start = time.perf_counter()
        history = fit(network, data.train, data.val, cfg, device, progress=not args.quiet,
                      run=run, resume_from=resume_from, metadata=meta, dist_ctx=ctx)
        wall = time.perf_counter() - start
        if not ctx.is_main:
            return 0
        network.cpu()
        result = evaluate(network, batches(data.val, 512))
        run.write_json({"final": result, "wall_seconds": wall, "training": cfg.to_dict(),
                        "world_size": ctx.world_size, **meta, "history": history})
        run.close()
        title = (f"{network.config.name} on {meta['dataset']['name']} (validation split, "
                 f"{'TTFS' if network.is_spiking else 'ReLU'} evaluation)")
        print(format_report(result, title=title))
        print(f"trained in {wall:.1f}s; wrote {run.checkpoint} and {out / 'metrics.json'}")
        return 0
    finally:
        distributed.teardown(ctx)


def _new_run_setup(args, out: Path, ctx):
    if (out / "checkpoint.pt").exists() and not args.overwrite:
        raise ConfigError(f"{out} already holds checkpoint.pt; pass --resume to continue it, "
                          "--overwrite to replace it, or another --out")
    preset = get_preset(args.preset)
    options = dataset_options(args)
    data = load_dataset(args.dataset, args.data_dir, **options)
    model_name = args.model or DEFAULT_MODEL.get(args.dataset, "cnn")
    x_max0 = args.x_max0 if args.x_max0 is not None else preset["x_max0"]
    td0 = args.td0 if args.td0 is not None else td_for_x_max(x_max0, args.tau0)
    model_kw = {k: v for k, v in (("width", args.width), ("pool", args.pool)) if v is not None}
    seed_everything(args.seed)  # weight initialisation is part of a reproducible run
    network = get_model(model_name, num_classes=data.num_classes, in_shape=data.in_shape,
                        activation=args.activation, T=args.T, tau0=args.tau0, td0=td0,
                        theta0=args.theta0, grad_mode=args.grad_mode, **model_kw)
    spiking = args.activation == "ttfs"
    cfg = TrainConfig(
        epochs=20 if args.epochs is None else args.epochs, batch_size=args.batch_size, lr=args.lr,
        lr_schedule=args.lr_schedule, lr_step=args.lr_step, lr_gamma=args.lr_gamma,
        lambda_w=args.lambda_w,
        lambda_tr=_pick(args.lambda_tr, preset["lambda_tr"]) if spiking else 0.0,
        lambda_tb=_pick(args.lambda_tb, preset["lambda_tb"]) if spiking else 0.0,
        tb_mode=args.tb_mode,
        sr_target=_pick(args.sr_target, preset["sr_target"]) if spiking else 0,
        reg_start=args.reg_start, seed=args.seed, bf16=not args.no_bf16,
        precise_bn=args.precise_bn)
    if ctx.is_main and args.overwrite:
        for stale in ("checkpoint.pt", "checkpoint.prev.pt", "metrics.csv", "metrics.json"):
            (out / stale).unlink(missing_ok=True)
    ctx.barrier()
    meta = {"preset": args.preset, "model": model_name,
            "dataset": {"name": args.dataset, "data_dir": _abs(args.data_dir),
                        "options": options}}
    return network, data, cfg, meta


def _resume_setup(args, out: Path):
    if args.overwrite:
        raise ConfigError("--resume and --overwrite contradict each other; pick one")
    ckpt = RunDirectory(out, tensorboard=False).latest_readable(
        warn=lambda m: print(m, file=sys.stderr))
    if ckpt is None:
        raise ConfigError(f"nothing to resume in {out}: it holds no checkpoint; run without "
                          "--resume to start")
    if "optimizer" not in ckpt or "epoch" not in ckpt:
        raise CheckpointError(f"{out}/checkpoint.pt holds no training state to resume from")
    network = TTFSNetwork(NetworkConfig.from_dict(ckpt["network"]))
    training = dict(ckpt["training"])
    if args.epochs is not None:
        training["epochs"] = args.epochs
    cfg = TrainConfig(**training)
    dataset = ckpt.get("dataset", {})
    data = load_dataset(dataset["name"], dataset.get("data_dir"), **dataset.get("options", {}))
    meta = {k: ckpt[k] for k in ("preset", "model", "dataset") if k in ckpt}
    if ckpt["epoch"] >= cfg.epochs:
        print(f"{out}: all {cfg.epochs} epochs are done; pass --epochs N to train further",
              file=sys.stderr)
    return network, data, cfg, meta, ckpt


def _is_nir_file(path: str) -> bool:
    return Path(path).suffix.lower() == ".nir"


def _evaluate_nir(args: argparse.Namespace) -> int:
    """``ttfs evaluate net.nir --backend snntorch|norse``: the file alone, no surrogate."""
    if args.backend == "surrogate":
        raise ConfigError("a .nir file holds the spiking network, not its surrogate; pass "
                          "--backend snntorch or --backend norse")
    tnir = load_adapter("nir")
    graph = tnir.read(args.checkpoint)
    net = tnir.from_nir(graph, args.backend)
    stored = tnir.dataset_of(graph) or {}
    name = args.dataset or stored.get("name")
    if name is None:
        raise ConfigError(f"{args.checkpoint} does not record its dataset; pass --dataset")
    data_dir = args.data_dir if args.dataset or args.data_dir else stored.get("data_dir")
    options = dict(stored.get("options", {})) if name == stored.get("name") else {}
    options.update(augment=False, download=False)
    data = load_dataset(name, data_dir, **options)
    expected = tnir.input_shape_of(graph)
    if tuple(data.in_shape) != expected:
        raise ConfigError(f"dataset {name!r} has inputs {tuple(data.in_shape)}, the NIR "
                          f"network expects {expected}")
    loader = batches(data.split(args.split), args.batch_size)
    result = evaluate_simulated(net, loader, args.backend, reference=args.energy_ref)
    return _report(args, result, name)


def _report(args: argparse.Namespace, result: dict, name: str) -> int:
    result.update(dataset=name, split=args.split, backend=args.backend)
    if args.json:
        print(json.dumps(result))
    else:
        print(format_report(result, title=f"{args.checkpoint} on {name} ({args.split}), "
                                          f"backend {args.backend}"))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    if _is_nir_file(args.checkpoint):
        return _evaluate_nir(args)
    network, ckpt = load_checkpoint(args.checkpoint)
    trained_on = ckpt.get("dataset", {})
    name = args.dataset or trained_on.get("name")
    if name is None:
        raise ConfigError("the checkpoint does not record its dataset; pass --dataset")
    data_dir = args.data_dir if args.dataset or args.data_dir else trained_on.get("data_dir")
    # the training run's event/frame settings, never its augmentation or download
    options = dict(trained_on.get("options", {})) if name == trained_on.get("name") else {}
    options.update(augment=False, download=False)
    data = load_dataset(name, data_dir, **options)
    if tuple(data.in_shape) != tuple(network.config.in_shape):
        raise ConfigError(f"dataset {name!r} has inputs {data.in_shape}, the checkpoint's model "
                          f"expects {tuple(network.config.in_shape)}")
    loader = batches(data.split(args.split), args.batch_size)
    if args.backend == "surrogate":
        result = evaluate(network, loader, reference=args.energy_ref)
    else:
        if not network.is_spiking:
            raise ConfigError("a ReLU network has no spiking simulation; use --backend "
                              "surrogate")
        result = evaluate_backend(network, loader, args.backend, reference=args.energy_ref)
    return _report(args, result, name)


def _export(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise ConfigError(f"{out} exists; pass --overwrite or choose another --out")
    adapter = load_adapter(args.backend)
    network, ckpt = load_checkpoint(args.checkpoint)
    if not network.is_spiking:
        raise ConfigError("a ReLU network cannot be exported to a spiking framework")
    if args.backend == "nir":
        graph = adapter.to_nir(network, dataset=ckpt.get("dataset"))
        adapter.write(graph, out)
        neurons = sum(1 for node in graph.nodes.values() if type(node).__name__ == "IF")
        print(f"wrote {out}: NIR graph of {len(graph.nodes)} nodes ({neurons} TTFS neuron "
              f"layers, convention {adapter.CONVENTION} v{adapter.CONVENTION_VERSION}); load it "
              f"with ttfs_plugin.nir.from_nir({str(out)!r}, backend='snntorch' or 'norse')")
        return 0
    net = getattr(adapter, f"to_{args.backend}")(network)
    adapter.save(net, out)
    print(f"wrote {out}: {len(list(net.children()))} {args.backend} modules, "
          f"{adapter.num_steps(net)} time steps; load it with "
          f"ttfs_plugin.{args.backend}.load({str(out)!r})")
    return 0


def format_report(result: dict, title: str = "") -> str:
    """A human-readable table of accuracy and efficiency figures."""
    lines = [title] if title else []
    lines.append(f"accuracy            {100 * result['accuracy']:.2f} %  "
                 f"({result['samples']} samples)")
    if "per_layer" not in result:
        return "\n".join(lines)
    lines += [
        f"spikes per sample   {result['spikes_per_sample']:.1f}",
        f"neurons             {result['neurons']}",
        f"sparsity            {result['sparsity']:.4f} spikes/neuron",
        f"spike rate          {100 * result['spike_rate']:.4f} %",
        f"time steps          {result['time_steps']}",
        f"energy (TrueNorth)  {result['energy']['truenorth']:.4f}  "
        f"(SpiNNaker {result['energy']['spinnaker']:.4f}; relative to "
        f"{result['energy']['reference']['name']})",
        f"{'layer':<12}{'neurons':>10}{'spikes':>12}{'spikes/neuron':>15}",
    ]
    for layer in result["per_layer"]:
        lines.append(f"{layer['name']:<12}{layer['neurons']:>10}"
                     f"{layer['spikes_per_sample']:>12.1f}{layer['sparsity']:>15.4f}")
    return "\n".join(lines)


def _pick(flag, preset_value):
    return preset_value if flag is None else flag


def _abs(path: str | None) -> str | None:
    return None if path is None else os.path.abspath(path)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but no CUDA GPU is available; use --device cpu")
    return device


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """Parse, letting ``--config FILE`` provide defaults that explicit flags override."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "config", None):
        values = read_config(args.config, _train_dests(parser))
        train_parser = _subparser(parser, "train")
        train_parser.set_defaults(**values)
        args = parser.parse_args(argv)
        args.config_values = values
    return args


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[name]
    raise KeyError(name)


def _train_dests(parser: argparse.ArgumentParser) -> set[str]:
    return {a.dest for a in _subparser(parser, "train")._actions} - {"help", "config"}


def read_config(path: str, known: set[str]) -> dict:
    """Flag values from a TOML file (keys are flag names, with ``-`` or ``_``)."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"config file {file} does not exist")
    try:
        raw = tomllib.loads(file.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file} is not valid TOML ({exc})") from None
    values = {key.replace("-", "_"): value for key, value in raw.items()}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{file}: unknown key(s) {', '.join(unknown)}; valid keys are the "
                          f"flags of 'ttfs train', e.g. {', '.join(sorted(known)[:6])} …")
    return values


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parse(argv)
    except TTFSError as exc:
        print(f"ttfs: error: {exc}", file=sys.stderr)
        return 2
    try:
        command = {"train": _train, "evaluate": _evaluate, "export": _export,
                   "plot": run_plot}[args.command]
        return command(args)
    except TTFSError as exc:
        print(f"ttfs {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ttfs {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
