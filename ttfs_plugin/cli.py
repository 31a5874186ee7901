"""The ``ttfs`` command: ``ttfs train``, ``evaluate``, ``export``, ``plot`` and ``configs``.

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
from .checkpoint import existing_checkpoints, find_checkpoint, load_checkpoint
from .configs import list_configs, resolve_config
from .data import DATASETS, SPLITS, add_data_arguments, dataset_options, default_model
from .errors import CheckpointError, ConfigError, TTFSError
from .metrics import evaluate
from .models import get_model
from .plot_cli import add_plot_parser, run_plot
from .records import Checkpoint, DatasetRef, evaluation_data
from .simulation import BACKENDS, evaluate_backend, evaluate_simulated, load_adapter
from .synops import OperationCosts
from .training import RunDirectory, TrainConfig, batches, distributed, fit, seed_everything
from .training.config import (
    DEFAULT_PRESET,
    PRESETS,
    ModelSettings,
    add_arguments,
    check_value,
    defaults_of,
    fields_of,
    from_settings,
    get_preset,
    resolve,
    setting_kind,
)
from .training.rundir import check_out_folder, finite_json


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ttfs", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"ttfs-plugin {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a TTFS network through the surrogate model",
                           description="Train a TTFS network. Where a value comes from: the "
                           "command line, else the --config file, else the preset, else the "
                           "default shown.")
    train.add_argument("--dataset", default="digits", help=f"one of {sorted(DATASETS)}")
    train.add_argument("--data-dir", help="folder holding the dataset's files")
    train.add_argument("--preset", default=DEFAULT_PRESET,
                       help=f"one of {list(PRESETS)}: the paper's ablation row (sets x_max0, "
                       "sr_target, lambda_tr, lambda_tb)")
    train.add_argument("--out", required=True, help="run folder for checkpoint.pt, metrics.json")
    train.add_argument("--overwrite", action="store_true",
                       help="replace a run already in --out")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in --out from its last checkpoint (only --epochs "
                       "and the output flags may change)")
    train.add_argument("--config", help="TOML file of settings (keys are the flag names), or "
                       "the name of a bundled config (see 'ttfs configs')")
    train.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, "
                       "cuda:1 …; under torchrun each process takes its local rank's GPU")
    train.add_argument("--quiet", action="store_true",
                       help="no progress bars and no per-epoch lines (the final report stays)")
    train.add_argument("--no-progress", action="store_true",
                       help="no progress bars (per-epoch lines stay); bars are never drawn "
                       "when stderr is not a terminal")
    add_arguments(train.add_argument_group("training"), TrainConfig)
    add_arguments(train.add_argument_group("kernel and model"), ModelSettings)
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
    ev.add_argument("--op-costs", metavar="AC,MAC",
                    help="energy per accumulate and per multiply-accumulate in pJ for the "
                    "energy_pj figures (default 0.9,4.6: 45 nm fp32, Horowitz 2014)")
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
    sub.add_parser("configs", help="list the bundled training configs (ttfs train --config NAME)")
    return parser


def _train(args: argparse.Namespace) -> int:
    settings = args.settings
    out = Path(settings["out"])
    device = _device(settings["device"])
    ctx = distributed.setup(device)
    device = distributed.device_for(ctx, device)
    try:
        if settings["resume"]:
            network, data, cfg, meta, resume_from = _resume_setup(settings, out)
        else:
            network, data, cfg, meta = _new_run_setup(settings, out, ctx)
            resume_from = None
        run = RunDirectory(out) if ctx.is_main else None
        start = time.perf_counter()
        history = fit(network, data.train, data.val, cfg, device,
                      progress=not (settings["quiet"] or settings["no_progress"]),
                      log_epochs=not settings["quiet"], run=run, resume_from=resume_from,
                      metadata=meta, dist_ctx=ctx)
        wall = time.perf_counter() - start
        if run is None:  # not the main process (ctx.is_main is False)
            return 0
        network.cpu()
        result = evaluate(network, batches(data.val, 512))
        run.write_json({"final": result, "wall_seconds": wall, "training": cfg.to_dict(),
                        "world_size": ctx.world_size, **_json_meta(meta), "history": history})
        run.close()
        title = (f"{network.config.name} on {meta['dataset'].name} (validation split, "
                 f"{'TTFS' if network.is_spiking else 'ReLU'} evaluation)")
        print(format_report(result, title=title))
        print(f"trained in {wall:.1f}s; wrote {run.checkpoint} and {out / 'metrics.json'}")
        return 0
    finally:
        distributed.teardown(ctx)


def _json_meta(meta: dict) -> dict:
    return {k: (v.to_dict() if isinstance(v, DatasetRef) else v) for k, v in meta.items()}


#: Settings that make no sense for a ReLU run (it has no kernel, no spikes), each with the
#: flags that turn it off over a config file.
SPIKING_ONLY = {"lambda_tr": "--lambda-tr 0", "lambda_tb": "--lambda-tb 0",
                "sr_target": "--sr-target 0", "freeze_input_kernel": "--no-freeze-input-kernel"}


def _new_run_setup(settings: dict, out: Path, ctx):
    if not settings["overwrite"] and existing_checkpoints(out):
        raise ConfigError(f"{out} already holds a run; pass --resume to continue it, "
                          "--overwrite to replace it, or another --out")
    check_out_folder(out)
    spiking = settings["activation"] == "ttfs"
    if not spiking:
        given = [k for k in SPIKING_ONLY if k in args_given(settings) and settings[k]]
        if given:
            raise ConfigError(f"--activation relu has no kernel and no spikes: "
                              f"{', '.join(given)} cannot apply; drop them (a config file's "
                              f"ReLU twin: add {' '.join(SPIKING_ONLY[k] for k in given)})")
        settings = {**settings, "lambda_tr": 0.0, "lambda_tb": 0.0, "sr_target": 0}
    cfg = from_settings(TrainConfig, settings)
    model = from_settings(ModelSettings, settings)
    preset = get_preset(settings["preset"])
    dataset = DatasetRef(settings["dataset"], _abs(settings["data_dir"]),
                         dataset_options(argparse.Namespace(**settings)))
    data = dataset.load()
    model_name = model.model or default_model(dataset.name)
    model_kw = {k: v for k, v in (("width", model.width), ("pool", model.pool)) if v is not None}
    if model.dropout:
        if model_name != "vgg16":
            raise ConfigError(f"--dropout is the vgg16 builder's (the authors' positions); "
                              f"model {model_name!r} has none: drop --dropout")
        model_kw["dropout"] = True
    seed_everything(cfg.seed)  # weight initialisation is part of a reproducible run
    network = get_model(model_name, num_classes=data.num_classes, in_shape=data.in_shape,
                        **model.network_kwargs(preset), **model_kw)
    if ctx.is_main and settings["overwrite"]:
        RunDirectory(out, tensorboard=False).clear()
    ctx.barrier()
    meta = {"preset": preset.name, "model": model_name, "dataset": dataset}
    return network, data, cfg, meta


#: What may change when a run is resumed (everything else is the run's own).
RESUMABLE = {"out", "resume", "epochs", "device", "quiet", "no_progress"}


def _resume_setup(settings: dict, out: Path):
    given = args_given(settings)
    if settings["overwrite"]:
        raise ConfigError("--resume and --overwrite contradict each other; pick one")
    changed = sorted(given - RESUMABLE)
    if changed:
        raise ConfigError(f"--resume continues the run as it was configured; "
                          f"{', '.join('--' + k.replace('_', '-') for k in changed)} cannot "
                          "change (only --epochs): start a new run with another --out")
    if not existing_checkpoints(out):
        raise ConfigError(f"nothing to resume in {out}: it holds no checkpoint; run without "
                          "--resume to start")
    path = find_checkpoint(out, warn=lambda m: print(m, file=sys.stderr))
    ckpt = Checkpoint.read(path)
    if ckpt.optimizer is None or ckpt.training is None:
        raise CheckpointError(f"{path} holds no training state to resume from")
    training = dict(ckpt.training)
    if "epochs" in given:
        training["epochs"] = settings["epochs"]
    cfg = TrainConfig.from_dict(training)
    if ckpt.dataset is None:
        raise CheckpointError(f"{path} does not record its dataset; it cannot be resumed")
    network = ckpt.build_network()
    data = ckpt.dataset.load()
    meta = {"preset": ckpt.preset, "model": ckpt.model, "dataset": ckpt.dataset}
    if ckpt.epoch >= cfg.epochs:
        print(f"{out}: all {cfg.epochs} epochs are done; pass --epochs N to train further",
              file=sys.stderr)
    else:
        print(f"resuming {out} from {path.name}: epoch {ckpt.epoch} of {cfg.epochs} done, "
              f"continuing with epoch {ckpt.epoch + 1}", file=sys.stderr)
    return network, data, cfg, meta, ckpt


def args_given(settings: dict) -> set[str]:
    """The settings the command line or the config file gave (not defaults or the preset)."""
    return set(settings.get("_given", ()))


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
    stored = tnir.dataset_of(graph)
    ref = evaluation_data(DatasetRef.from_dict(stored) if stored else None, args.dataset,
                          args.data_dir, what=args.checkpoint)
    data = ref.load()
    expected = tnir.input_shape_of(graph)
    if tuple(data.in_shape) != expected:
        raise ConfigError(f"dataset {ref.name!r} has inputs {tuple(data.in_shape)}, the NIR "
                          f"network expects {expected}")
    loader = batches(data.split(args.split), args.batch_size)
    result = evaluate_simulated(net, loader, args.backend, reference=args.energy_ref,
                                costs=args.op_costs)
    return _report(args, result, ref.name)


def _report(args: argparse.Namespace, result: dict, name: str) -> int:
    result.update(dataset=name, split=args.split, backend=args.backend)
    if args.json:
        print(json.dumps(finite_json(result), allow_nan=False))
    else:
        print(format_report(result, title=f"{args.checkpoint} on {name} ({args.split}), "
                                          f"backend {args.backend}"))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    OperationCosts.parse(args.op_costs)  # a bad value is refused before any work
    if _is_nir_file(args.checkpoint):
        return _evaluate_nir(args)
    network, record = load_checkpoint(args.checkpoint)
    ref = evaluation_data(record.dataset, args.dataset, args.data_dir)
    data = ref.load()
    if tuple(data.in_shape) != tuple(network.config.in_shape):
        raise ConfigError(f"dataset {ref.name!r} has inputs {tuple(data.in_shape)}, the "
                          f"checkpoint's model expects {tuple(network.config.in_shape)}")
    if data.num_classes > network.config.num_classes:
        raise ConfigError(f"dataset {ref.name!r} has {data.num_classes} classes, the "
                          f"checkpoint's model {network.config.num_classes}: its labels cannot "
                          "be scored; evaluate on data of the classes it was trained on")
    loader = batches(data.split(args.split), args.batch_size)
    if args.backend == "surrogate":
        result = evaluate(network, loader, reference=args.energy_ref, costs=args.op_costs)
    else:
        if not network.is_spiking:
            raise ConfigError("a ReLU network has no spiking simulation; use --backend "
                              "surrogate")
        result = evaluate_backend(network, loader, args.backend, reference=args.energy_ref,
                                  costs=args.op_costs)
    return _report(args, result, ref.name)


def _export(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise ConfigError(f"{out} exists; pass --overwrite or choose another --out")
    adapter = load_adapter(args.backend)
    network, ckpt = load_checkpoint(args.checkpoint)
    if not network.is_spiking:
        raise ConfigError("a ReLU network cannot be exported to a spiking framework")
    if args.backend == "nir":
        graph = adapter.to_nir(network, dataset=ckpt.dataset.to_dict() if ckpt.dataset else None)
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


def _configs(args: argparse.Namespace) -> int:
    """``ttfs configs``: each bundled config, its file and first comment line."""
    names = list_configs()
    width = max(map(len, names), default=0)
    for name in names:
        path = resolve_config(name)
        first = next((line.lstrip("# ").strip() for line in path.read_text().splitlines()
                      if line.startswith("#")), "")
        print(f"{name:<{width}}  {first}")
    return 0


def _operation_lines(result: dict) -> list[str]:
    if "synaptic_operations" not in result:
        return []
    ops, macs, energy = (result["synaptic_operations"], result["relu_twin_macs"],
                         result["energy_pj"])
    return [f"synaptic ops        {ops['per_sample']:.4g} per sample "
            f"({ops['per_sample_without_input']:.4g} without the input layer); ReLU twin "
            f"{macs['per_sample']:.4g} MACs",
            f"energy per sample   {energy['snn'] / 1e6:.4g} µJ vs ReLU twin "
            f"{energy['relu_twin'] / 1e6:.4g} µJ (AC {energy['costs']['ac_pj']:g} pJ, MAC "
            f"{energy['costs']['mac_pj']:g} pJ)"]


def format_report(result: dict, title: str = "") -> str:
    """A human-readable table of accuracy and efficiency figures."""
    lines = [title] if title else []
    lines.append(f"accuracy            {100 * result['accuracy']:.2f} %  "
                 f"({result['samples']} samples)")
    if "agreement_with_surrogate" in result:
        lines.append(f"agreement           {100 * result['agreement_with_surrogate']:.2f} % of "
                     f"predictions, {100 * result['spike_time_agreement']:.4f} % of spike times "
                     f"equal the surrogate's")
    if "per_layer" not in result:
        return "\n".join(lines)
    lines += [
        f"spikes per sample   {result['spikes_per_sample']:.1f}  "
        f"({result['without_input']['spikes_per_sample']:.1f} without the input layer)",
        f"neurons             {result['neurons']}",
        f"sparsity            {result['sparsity']:.4f} spikes/neuron",
        f"spike rate          {100 * result['spike_rate']:.4f} %",
        f"time steps          {result['time_steps']}",
        f"energy (TrueNorth)  {result['energy']['truenorth']:.4f}  "
        f"(SpiNNaker {result['energy']['spinnaker']:.4f}; relative to "
        f"{result['energy']['reference']['name']})",
        *_operation_lines(result),
        f"{'layer':<12}{'neurons':>10}{'spikes':>12}{'spikes/neuron':>15}",
    ]
    for layer in result["per_layer"]:
        lines.append(f"{layer['name']:<12}{layer['neurons']:>10}"
                     f"{layer['spikes_per_sample']:>12.1f}{layer['sparsity']:>15.4f}")
    return "\n".join(lines)


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
    """Parse; for ``train``, merge the levels into ``args.settings`` (see
    :func:`ttfs_plugin.training.config.resolve`)."""
    parser = build_parser()
    train = _subparser(parser, "train")
    defaults = _suppress_defaults(train)
    args = parser.parse_args(argv)
    if args.command == "train":
        given = {k: v for k, v in vars(args).items() if k != "command"}
        config = read_config(given["config"], train) if given.get("config") else {}
        preset = get_preset(given.get("preset", config.get("preset", DEFAULT_PRESET)))
        settings = resolve(given, config, preset, defaults)
        settings["_given"] = tuple(set(given) | set(config))
        args.settings = settings
    return args


def _suppress_defaults(parser: argparse.ArgumentParser) -> dict:
    """Every flag's default (the settings' from their dataclass fields); the parser then keeps
    only what the command line gives."""
    defaults = defaults_of(TrainConfig, ModelSettings)
    for action in parser._actions:
        if action.dest == "help":
            continue
        if action.default is not argparse.SUPPRESS:
            defaults[action.dest] = action.default
            action.default = argparse.SUPPRESS
    defaults["config"] = None
    return defaults


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[name]
    raise KeyError(name)


def train_setting_names(train: argparse.ArgumentParser | None = None) -> set[str]:
    """Every key a ``ttfs train`` config file may hold (the flags' names, ``_`` for ``-``)."""
    train = train or _subparser(build_parser(), "train")
    return {a.dest for a in train._actions} - {"help", "config", "out", "resume", "overwrite"}


def _value_kind(action: argparse.Action) -> tuple[type, bool]:
    fields = fields_of(TrainConfig, ModelSettings)
    if action.dest in fields:
        return setting_kind(fields[action.dest][0])
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        return bool, False
    kind = action.type if action.type in (int, float) else str
    return kind, True


def read_config(path: str, parser: argparse.ArgumentParser | None = None) -> dict:
    """Typed settings from a TOML file (keys are flag names, with ``-`` or ``_``), or from a
    bundled config by name. A bool is not a number, a string is not a bool, 2.7 is not an int:
    each is one clear error."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # Python 3.10
        import tomli as tomllib
    parser = parser or _subparser(build_parser(), "train")
    file = resolve_config(path)
    try:
        raw = tomllib.loads(file.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file} is not valid TOML ({exc})") from None
    actions = {a.dest: a for a in parser._actions}
    known = train_setting_names(parser)
    values = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name not in known:
            raise ConfigError(f"{file}: unknown key {key!r}; valid keys are the flags of "
                              f"'ttfs train': {', '.join(sorted(known))}")
        if name in values:  # batch_size and batch-size: one setting given twice
            first = next(k for k in raw if k.replace("-", "_") == name)
            raise ConfigError(f"{file}: {first!r} and {key!r} are one setting given twice; "
                              "keep one")
        kind, optional = _value_kind(actions[name])
        try:
            values[name] = check_value(name, value, kind, optional, actions[name].choices)
        except ConfigError as exc:
            raise ConfigError(f"{file}: {exc}") from None
    return values


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parse(argv)
    except TTFSError as exc:
        print(f"ttfs: error: {exc}", file=sys.stderr)
        return 2
    try:
        command = {"train": _train, "evaluate": _evaluate, "export": _export,
                   "plot": run_plot, "configs": _configs}[args.command]
        return command(args)
    except TTFSError as exc:
        print(f"ttfs {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk, a read-only folder, …: one line, nothing half-written
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"ttfs {args.command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ttfs {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
