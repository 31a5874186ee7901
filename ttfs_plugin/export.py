"""Export, one way: surrogate network → plan of stages → an adapter's modules → file → modules.

* :func:`plan_network` reads a trained surrogate model (a ``TTFSNetwork`` or any
  ``nn.Sequential`` of the plugin's layers and plain torch layers), folds each batch norm into the
  weight op before it with its running statistics, and returns a list of stages:

  - :class:`NeuronStage` — a TTFS neuron layer (layer 0 is the input layer; with
    ``output="spikes"`` the last one is the spiking output layer ``L``);
  - :class:`SynapseStage` — the kernel-weighted connection from one neuron layer into the next,
    wrapping everything linear in between (avg-pool, flatten, the folded weight op);
  - :class:`MaxPoolStage` — first-spike max-pooling right after a neuron layer;
  - :class:`ReadoutStage` — the output layer's integrator (its membrane is the logits).

* :func:`build` turns stages into a framework's modules through its :class:`Backend` (one
  factory per stage kind, and a container); every module built can describe itself again as its
  stage (``module.to_stage()``), so :func:`save` writes any network of the plugin's modules,
  converted or built by hand, and :func:`load` rebuilds it.

A new stage kind is one :class:`Stage` subclass here, its step rule in
:mod:`ttfs_plugin.timestep` and one factory per adapter.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar, cast

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from .errors import CheckpointError, ConfigError, TTFSError
from .layers import AnalogInput, InputEncoder, TemporalKernel, TTFSActivation
from .roles import Exportable, exportable_modules
from .timestep import INPUT_MODES, check_input_mode

OUTPUT_MODES = ("membrane", "spikes")
SUPPORTED = ("InputEncoder or AnalogInput (first)", "TTFSActivation", "Conv2d", "Linear",
             "BatchNorm1d/2d", "TBBatchNorm1d/2d", "MaxPool2d", "AvgPool2d", "Flatten", "Identity",
             "Dropout")
EXPORT_FORMAT = "ttfs-plugin/exported-network"
EXPORT_VERSION = 3  # 3: neurons carry their quantizer and relay flag


class ExportError(TTFSError):
    """A module the time-stepped simulation cannot represent."""


# --- stages -------------------------------------------------------------------------------------


@dataclass
class Stage:
    """One step of the plan. Subclasses set ``kind`` and describe themselves as plain data."""

    kind: ClassVar[str] = ""
    name: str

    def to_dict(self) -> dict:
        return {"kind": self.kind, "name": self.name}

    @classmethod
    def from_dict(cls, item: dict, kernels: dict[int, TemporalKernel]) -> Stage:
        return cls(name=item["name"])


@dataclass
class NeuronStage(Stage):
    """Spiking layer ``index``: integrates in window ``index``, fires in window ``index + 1``."""

    kind: ClassVar[str] = "neuron"
    index: int = 0
    kernel: TemporalKernel = field(default_factory=TemporalKernel)
    input_mode: str = "analog"  # layer 0 only: see timestep.INPUT_MODES
    output: bool = False  # the spiking output layer (its spikes are the network's output)
    relay: bool = False  # layer 0 of an analog-input network: passes the image on, no spikes

    def to_dict(self) -> dict:
        return {**super().to_dict(), "index": self.index, "T": self.kernel.T,
                "theta0": self.kernel.theta0, "quantizer": self.kernel.quantizer,
                "input_mode": self.input_mode, "output": self.output, "relay": self.relay}

    @classmethod
    def from_dict(cls, item, kernels):
        kernel = TemporalKernel(item["T"], theta0=item["theta0"], quantizer=item["quantizer"])
        kernels[item["index"]] = kernel
        return cls(item["name"], item["index"], kernel, check_input_mode(item["input_mode"]),
                   bool(item["output"]), bool(item["relay"]))


@dataclass
class SynapseStage(Stage):
    """Spikes of layer ``source`` into the next layer, ``kappa_source(k)`` per spike."""

    kind: ClassVar[str] = "synapse"
    source: int = 0
    kernel: TemporalKernel = field(default_factory=TemporalKernel)  # the source layer's
    op: nn.Module = field(default_factory=nn.Identity)  # linear, no bias
    bias: Tensor | None = None

    def to_dict(self) -> dict:
        return {**super().to_dict(), "source": self.source, "op": describe_op(self.op),
                "bias": self.bias is not None}

    @classmethod
    def from_dict(cls, item, kernels):
        op = build_op(item["op"])
        bias = None
        if item["bias"]:
            last = op[-1] if isinstance(op, nn.Sequential) else op
            bias = torch.zeros(last.weight.shape[0])
        return cls(item["name"], item["source"], kernels[item["source"]], op, bias)


@dataclass
class MaxPoolStage(Stage):
    """First-spike max-pooling, non-overlapping ``kernel_size``."""

    kind: ClassVar[str] = "maxpool"
    kernel_size: int = 2

    def to_dict(self) -> dict:
        return {**super().to_dict(), "kernel_size": self.kernel_size}

    @classmethod
    def from_dict(cls, item, kernels):
        return cls(item["name"], int(item["kernel_size"]))


@dataclass
class ReadoutStage(Stage):
    """The non-spiking output layer ``index = L``: its membrane is the logits."""

    kind: ClassVar[str] = "readout"
    index: int = 0

    def to_dict(self) -> dict:
        return {**super().to_dict(), "index": self.index}

    @classmethod
    def from_dict(cls, item, kernels):
        return cls(item["name"], int(item["index"]))


STAGE_KINDS: dict[str, type[Stage]] = {
    cls.kind: cls for cls in (NeuronStage, SynapseStage, MaxPoolStage, ReadoutStage)}


# --- linear ops inside a synapse: a table of codecs ---------------------------------------------

def _conv2d_fields(m: nn.Conv2d) -> dict:
    return {"in_channels": m.in_channels, "out_channels": m.out_channels,
            "kernel_size": list(m.kernel_size), "stride": list(m.stride),
            "padding": list(m.padding), "dilation": list(m.dilation), "groups": m.groups,
            "bias": False}


_OP_CODECS: dict[type, tuple[str, Callable[[nn.Module], dict]]] = {
    nn.Conv2d: ("Conv2d", lambda m: _conv2d_fields(cast(nn.Conv2d, m))),
    nn.Linear: ("Linear", lambda m: {"in_features": m.in_features,
                                     "out_features": m.out_features, "bias": False}),
    nn.AvgPool2d: ("AvgPool2d", lambda m: {"kernel_size": m.kernel_size, "stride": m.stride,
                                           "padding": m.padding,
                                           "count_include_pad": m.count_include_pad}),
    nn.Flatten: ("Flatten", lambda m: {"start_dim": m.start_dim, "end_dim": m.end_dim}),
    nn.Identity: ("Identity", lambda m: {}),
}
_OP_CLASSES = {name: cls for cls, (name, _) in _OP_CODECS.items()}


def describe_op(op: nn.Module) -> list:
    """Plain description of a synapse's linear op (rebuilt by :func:`build_op`)."""
    parts = list(op) if isinstance(op, nn.Sequential) else [op]
    out = []
    for part in parts:
        codec = next((_OP_CODECS[cls] for cls in type(part).__mro__ if cls in _OP_CODECS), None)
        if codec is None:
            raise ExportError(f"cannot describe {type(part).__name__} for saving; a synapse op "
                              f"is made of {', '.join(_OP_CLASSES)}")
        out.append([codec[0], codec[1](part)])
    return out


def build_op(description: list) -> nn.Module:
    parts = [_OP_CLASSES[kind](**kwargs) for kind, kwargs in description]
    return parts[0] if len(parts) == 1 else nn.Sequential(*parts)


# --- the graph walk -----------------------------------------------------------------------------


def fold_batch_norm(op: nn.Conv2d | nn.Linear, bn: _BatchNorm | None
                    ) -> tuple[nn.Module, Tensor | None]:
    """A bias-free copy of ``op`` with ``bn`` folded in, and the folded bias.

    ``bn(op(x)) = s * (W x + b - mean) + beta`` with ``s = gamma / sqrt(var + eps)``
    → weight ``s * W``, bias ``s * (b - mean) + beta`` (running statistics).
    """
    folded = copy.deepcopy(op)
    weight = folded.weight.detach().clone()
    bias = folded.bias.detach().clone() if folded.bias is not None else None
    if bn is not None:
        running_mean, running_var = bn.running_mean, bn.running_var
        if running_mean is None or running_var is None:
            raise ExportError(f"{type(bn).__name__} without running statistics cannot be "
                              "folded; build it with track_running_stats=True")
        scale = running_var.rsqrt() if bn.eps == 0 else (running_var + bn.eps).rsqrt()
        if bn.affine:
            scale = scale * bn.weight.detach()
        base = bias if bias is not None else torch.zeros_like(running_mean)
        bias = scale * (base - running_mean)
        if bn.affine:
            bias = bias + bn.bias.detach()
        weight = weight * scale.view(-1, *([1] * (weight.dim() - 1)))
    folded.weight = nn.Parameter(weight)
    folded.bias = None
    return folded, bias


def _leaves(module: nn.Module):
    """Modules in execution order, descending into nested ``nn.Sequential`` s."""
    for name, child in module.named_children():
        if isinstance(child, nn.Sequential):
            for sub_name, sub in _leaves(child):
                yield f"{name}.{sub_name}", sub
        else:
            yield name, child


class _Planner:
    """Walks the surrogate's leaves once; each module type has one handler (see ``HANDLERS``)."""

    def __init__(self, T: int, input_mode: str) -> None:
        self.T = T
        self.input_mode = input_mode
        self.stages: list[Stage] = []
        self.layer = -1  # index of the last neuron layer
        self.kernel: TemporalKernel | None = None  # its (copied) kernel
        self.pending: list[nn.Module] = []  # linear modules between a neuron and a weight op
        # the weight op waiting for its neuron, and the batch norm folded into it
        self.weight: tuple[str, nn.Conv2d | nn.Linear, _BatchNorm | None] | None = None

    def flush_synapse(self) -> None:
        assert self.weight is not None and self.kernel is not None
        name, op, bn = self.weight
        folded, bias = fold_batch_norm(op, bn)
        linear = nn.Sequential(*self.pending, folded) if self.pending else folded
        self.stages.append(SynapseStage(name, self.layer, self.kernel, linear, bias))
        self.pending, self.weight = [], None

    def neuron(self, name: str, module: TTFSActivation) -> None:
        if module.T != self.T:
            raise ExportError(f"{name}: window T={module.T} differs from the input encoder's "
                              f"T={self.T}; every layer must share T")
        if self.layer >= 0:
            if self.weight is None:
                raise ExportError(f"{name}: a TTFS neuron must follow a weight op")
            self.flush_synapse()
        elif self.pending:
            raise ExportError(f"{name}: nothing may sit before the input encoder")
        self.layer += 1
        self.kernel = copy.deepcopy(module.kernel)
        mode = self.input_mode if self.layer == 0 else "analog"
        self.stages.append(NeuronStage(name, self.layer, self.kernel, mode))

    def analog_input(self, name: str, module: AnalogInput) -> None:
        if self.layer >= 0 or self.pending:
            raise ExportError(f"{name}: an AnalogInput must be the network's first layer")
        if self.input_mode == "spikes":
            raise ExportError("this network takes the analog image (its input layer is an "
                              "AnalogInput): it has no input spike train; convert it with "
                              "input_mode='analog'")
        self.layer = 0
        # td = 0: the synapse weighs the relayed image by kappa(0) = exp(0) = 1, exactly
        self.kernel = TemporalKernel(module.T, td=0.0, trainable=False).to(
            module.dtype_probe)  # the network's dtype and device
        self.stages.append(NeuronStage(name, 0, self.kernel, "analog", relay=True))

    def weight_op(self, name: str, module: nn.Conv2d | nn.Linear) -> None:
        if isinstance(module, nn.Conv2d) and (isinstance(module.padding, str)
                                              or module.padding_mode != "zeros"):
            raise ExportError(f"{name}: only Conv2d with integer zero padding can be exported "
                              f"(got padding={module.padding!r}, padding_mode="
                              f"{module.padding_mode!r}); rebuild it with padding=(ph, pw)")
        if self.weight is not None:
            raise ExportError(f"{name}: two weight ops without a TTFS neuron between them")
        self.weight = (name, module, None)

    def batch_norm(self, name: str, module: _BatchNorm) -> None:
        if self.weight is None or self.weight[2] is not None:
            raise ExportError(f"{name}: batch norm must directly follow a Conv2d/Linear")
        self.weight = (self.weight[0], self.weight[1], module)

    def max_pool(self, name: str, module: nn.MaxPool2d) -> None:
        if self.weight is not None or self.pending:
            raise ExportError(f"{name}: max-pooling must directly follow a TTFS neuron")
        if module.stride not in (None, module.kernel_size) or module.padding != 0:
            raise ExportError(f"{name}: only non-overlapping max-pooling without padding "
                              "(stride = kernel_size) is supported")
        size = module.kernel_size
        self.stages.append(MaxPoolStage(name, int(size[0] if isinstance(size, tuple) else size)))

    def linear_reshape(self, name: str, module: nn.Module) -> None:
        if isinstance(module, nn.AvgPool2d) and (module.ceil_mode
                                                 or module.divisor_override is not None):
            raise ExportError(f"{name}: AvgPool2d with ceil_mode or divisor_override cannot be "
                              "exported; use the defaults")
        if self.weight is not None:
            raise ExportError(f"{name}: pooling/flatten after a weight op needs a TTFS neuron "
                              "in between")
        self.pending.append(copy.deepcopy(module))

    def skip(self, name: str, module: nn.Module) -> None:
        pass

    HANDLERS: ClassVar[dict[type, str]] = {
        TTFSActivation: "neuron", AnalogInput: "analog_input", nn.Conv2d: "weight_op",
        nn.Linear: "weight_op",
        nn.BatchNorm1d: "batch_norm", nn.BatchNorm2d: "batch_norm", nn.MaxPool2d: "max_pool",
        nn.AvgPool2d: "linear_reshape", nn.Flatten: "linear_reshape", nn.Identity: "skip",
        nn.Dropout: "skip",
    }

    def visit(self, name: str, module: nn.Module) -> None:
        handler = next((self.HANDLERS[cls] for cls in type(module).__mro__
                        if cls in self.HANDLERS), None)
        if handler is None:
            raise ExportError(f"cannot convert module {name!r} ({type(module).__name__}); "
                              f"supported: {', '.join(SUPPORTED)}")
        getattr(self, handler)(name, module)


def plan_network(network: nn.Module, output: str = "membrane",
                 input_mode: str = "analog") -> list[Stage]:
    """The time-stepped plan of a trained surrogate ``network`` (see the module docstring).

    ``output="membrane"`` ends in a :class:`ReadoutStage` (logits = membrane after ``(L+1)*T``
    steps); ``"spikes"`` ends in a spiking output layer ``L`` whose first spike is the class
    (``(L+2)*T`` steps; its kernel starts as a copy of layer ``L-1`` 's). ``input_mode`` is how
    layer 0 takes its input (``timestep.INPUT_MODES``).
    """
    if output not in OUTPUT_MODES:
        raise ConfigError(f"unknown output {output!r}; choose one of: {', '.join(OUTPUT_MODES)}")
    check_input_mode(input_mode)
    if not isinstance(network, nn.Sequential):
        raise ExportError(f"can only export an nn.Sequential (such as TTFSNetwork), got "
                          f"{type(network).__name__}")
    leaves = list(_leaves(network))
    first = next((m for _, m in leaves if not isinstance(m, (nn.Identity, nn.Dropout))), None)
    if not isinstance(first, (InputEncoder, AnalogInput)):
        raise ExportError("the network must start with an InputEncoder or an AnalogInput "
                          "(layer 0 of a TTFS network); build it with ttfs_plugin.models or put "
                          "one first")
    planner = _Planner(first.T, input_mode)
    for name, module in leaves:
        planner.visit(name, module)
    if planner.weight is None:
        raise ExportError("the network must end with an output weight op (Linear) whose "
                          "membrane gives the logits")
    planner.flush_synapse()
    assert planner.kernel is not None  # flush_synapse has checked it
    L = planner.layer + 1
    if output == "membrane":
        planner.stages.append(ReadoutStage("readout", L))
    else:
        kernel = copy.deepcopy(planner.kernel)
        planner.stages.append(NeuronStage("spike_output", L, kernel, output=True))
    return planner.stages


# --- building, saving and loading through a backend ---------------------------------------------


@dataclass(frozen=True)
class Backend:
    """What an adapter supplies: one module factory per stage kind, and a container.

    ``factories[kind](stage, **options)`` returns a module that has ``to_stage()``;
    ``container(named_modules)`` wraps them; ``finish(net)`` (e.g. binding the run clock) runs
    after building or loading.
    """

    name: str
    factories: dict[str, Callable[..., nn.Module]]
    container: Callable[[list[tuple[str, nn.Module]]], nn.Module]
    finish: Callable[[nn.Module], nn.Module] = lambda net: net


def build(stages: list[Stage], backend: Backend, **options) -> nn.Module:
    """The backend's network for ``stages``."""
    missing = {st.kind for st in stages} - set(backend.factories)
    if missing:
        raise ExportError(f"the {backend.name} adapter cannot build stage kinds "
                          f"{sorted(missing)}")
    names = [st.name for st in stages]
    if len(set(names)) != len(names):
        raise ExportError(f"stage names must be unique, got {names}")
    modules = [(st.name, backend.factories[st.kind](st, **options)) for st in stages]
    return backend.finish(backend.container(modules))


def convert(model: nn.Module, backend: Backend, output: str = "membrane",
            input_mode: str = "analog", **options) -> nn.Module:
    """``model`` planned and built for ``backend``, in the model's dtype."""
    net = build(plan_network(model, output, input_mode), backend, **options)
    return net.to(next(model.parameters()).dtype)


def stages_of(net: nn.Module) -> list[Stage]:
    """The stages a built network describes (every module of the plugin, in order)."""
    stages = [cast(Exportable, m).to_stage() for m in exportable_modules(net)]
    if not stages:
        raise ExportError("the network holds none of the plugin's time-stepped modules")
    return stages


def save(net: nn.Module, path: str | Path, backend: Backend) -> None:
    """Write ``net`` (any network of the plugin's modules): its stages, dtype and weights."""
    from .checkpoint import atomic_torch_save

    spec = [st.to_dict() for st in stages_of(net)]
    dtypes = {p.dtype for p in net.parameters()}
    dtype = str(dtypes.pop()).replace("torch.", "") if len(dtypes) == 1 else "float32"
    atomic_torch_save({"format": EXPORT_FORMAT, "framework": backend.name,
                       "version": EXPORT_VERSION, "stages": spec, "dtype": dtype,
                       "state_dict": net.state_dict()}, path)


def load(path: str | Path, backend: Backend, **options) -> nn.Module:
    """Rebuild a network saved by :func:`save` for ``backend`` (no surrogate, no training code)."""
    data = read_exported(path, backend.name)
    kernels: dict[int, TemporalKernel] = {}
    try:
        stages = [STAGE_KINDS[item["kind"]].from_dict(item, kernels) for item in data["stages"]]
    except (KeyError, TypeError, IndexError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a valid exported-network description "
                              f"({exc!r})") from None
    net = build(stages, backend, **options).to(getattr(torch, data["dtype"]))
    try:
        net.load_state_dict(data["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the described network "
                              f"({str(exc).splitlines()[0]})") from None
    return net


def read_exported(path, framework: str) -> dict:
    """The saved dict of an exported network, with clear errors for a wrong or damaged file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no exported network at {path}; make one with 'ttfs export'")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path} is truncated or not an exported network "
                              f"({type(exc).__name__})") from None
    if not isinstance(data, dict) or data.get("format") != EXPORT_FORMAT:
        raise CheckpointError(f"{path} is not an exported ttfs-plugin network")
    if data.get("version") != EXPORT_VERSION:
        raise CheckpointError(f"{path} is an exported network of format version "
                              f"{data.get('version')}; this ttfs-plugin reads version "
                              f"{EXPORT_VERSION}: export it again from its checkpoint")
    if data.get("framework") != framework:
        raise CheckpointError(f"{path} was exported for {data.get('framework')!r}, not "
                              f"{framework!r}; load it with ttfs_plugin.{data.get('framework')}"
                              ".load")
    return data


__all__ = ["ExportError", "Stage", "NeuronStage", "SynapseStage", "MaxPoolStage", "ReadoutStage",
           "STAGE_KINDS", "OUTPUT_MODES", "INPUT_MODES", "plan_network", "fold_batch_norm",
           "describe_op", "build_op", "Backend", "build", "convert", "stages_of", "save", "load",
           "read_exported"]
