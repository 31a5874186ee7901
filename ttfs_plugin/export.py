"""The graph walk every exporter shares: surrogate network → a plan of time-stepped stages.

:func:`plan_network` reads a trained surrogate model (a ``TTFSNetwork`` or any ``nn.Sequential``
made of the plugin's layers and plain torch layers), folds each batch norm into the weight op
before it with its running statistics, and returns a list of stages:

* :class:`NeuronStage` — a TTFS neuron layer (the input encoder is layer 0);
* :class:`SynapseStage` — the kernel-weighted connection from one neuron layer into the next,
  wrapping everything linear in between (avg-pool, flatten, the folded weight op);
* :class:`MaxPoolStage` — first-spike max-pooling right after a neuron layer;
* :class:`ReadoutStage` — the output layer's integrator (its membrane is the logits).

The snnTorch and Norse adapters turn each stage into their own module.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .errors import TTFSError
from .layers import InputEncoder, TemporalKernel, TTFSActivation

SUPPORTED = ("InputEncoder (first)", "TTFSActivation", "Conv2d", "Linear", "BatchNorm1d/2d",
             "TBBatchNorm1d/2d", "MaxPool2d", "AvgPool2d", "Flatten", "Identity", "Dropout")


class ExportError(TTFSError):
    """A module the time-stepped simulation cannot represent."""


@dataclass
class NeuronStage:
    index: int  # spiking layer l: integrates in window l, fires in window l+1
    kernel: TemporalKernel  # a copy of the surrogate's, shared with the outgoing synapse
    name: str


@dataclass
class SynapseStage:
    source: int  # index of the neuron layer whose spikes it carries
    kernel: TemporalKernel  # the source layer's kernel (the same object as its NeuronStage's)
    op: nn.Module  # linear, no bias (avg-pool / flatten / folded conv or linear)
    bias: Tensor | None
    name: str


@dataclass
class MaxPoolStage:
    kernel_size: int
    name: str


@dataclass
class ReadoutStage:
    index: int  # = L, the number of spiking layers
    name: str


Stage = NeuronStage | SynapseStage | MaxPoolStage | ReadoutStage


def fold_batch_norm(op: nn.Module, bn: nn.Module | None) -> tuple[nn.Module, Tensor | None]:
    """A bias-free copy of ``op`` with ``bn`` folded in, and the folded bias.

    ``bn(op(x)) = s * (W x + b - mean) + beta`` with ``s = gamma / sqrt(var + eps)``
    → weight ``s * W``, bias ``s * (b - mean) + beta`` (running statistics).
    """
    folded = copy.deepcopy(op)
    weight = folded.weight.detach().clone()
    bias = folded.bias.detach().clone() if folded.bias is not None else None
    if bn is not None:
        if bn.running_mean is None:
            raise ExportError(f"{type(bn).__name__} without running statistics cannot be "
                              "folded; build it with track_running_stats=True")
        scale = bn.running_var.rsqrt() if bn.eps == 0 else (bn.running_var + bn.eps).rsqrt()
        if bn.affine:
            scale = scale * bn.weight.detach()
        base = bias if bias is not None else torch.zeros_like(bn.running_mean)
        bias = scale * (base - bn.running_mean)
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


def plan_network(network: nn.Module) -> list[Stage]:
    """The time-stepped plan of a trained surrogate ``network`` (see the module docstring)."""
    if not isinstance(network, nn.Sequential):
        raise ExportError(f"can only export an nn.Sequential (such as TTFSNetwork), got "
                          f"{type(network).__name__}")
    leaves = [(n, m) for n, m in _leaves(network)
              if not isinstance(m, (nn.Identity, nn.Dropout))]
    if not leaves or not isinstance(leaves[0][1], InputEncoder):
        raise ExportError("the network must start with an InputEncoder (layer 0 of a TTFS "
                          "network); build it with ttfs_plugin.models or put one first")
    stages: list[Stage] = []
    layer = -1  # index of the last neuron layer
    T = leaves[0][1].T
    pending: list[nn.Module] = []  # linear modules between a neuron and the next neuron
    weight: tuple[str, nn.Module, nn.Module | None] | None = None
    kernel: TemporalKernel | None = None  # the last neuron layer's (copied) kernel

    def flush_synapse():
        nonlocal pending, weight
        assert weight is not None and kernel is not None
        name, op, bn = weight
        folded, bias = fold_batch_norm(op, bn)
        linear = nn.Sequential(*pending, folded) if pending else folded
        stages.append(SynapseStage(layer, kernel, linear, bias, name))
        pending, weight = [], None

    for name, module in leaves:
        if isinstance(module, TTFSActivation):  # the input encoder included
            if module.T != T:
                raise ExportError(f"{name}: window T={module.T} differs from the input "
                                  f"encoder's T={T}; every layer must share T")
            if layer >= 0:
                if weight is None:
                    raise ExportError(f"{name}: a TTFS neuron must follow a weight op")
                flush_synapse()
            elif pending:
                raise ExportError(f"{name}: nothing may sit before the input encoder")
            layer += 1
            kernel = copy.deepcopy(module.kernel)
            stages.append(NeuronStage(layer, kernel, name))
        elif isinstance(module, (nn.Conv2d, nn.Linear)):
            if weight is not None:
                raise ExportError(f"{name}: two weight ops without a TTFS neuron between them")
            weight = (name, module, None)
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            if weight is None or weight[2] is not None:
                raise ExportError(f"{name}: batch norm must directly follow a Conv2d/Linear")
            weight = (weight[0], weight[1], module)
        elif isinstance(module, nn.MaxPool2d):
            if weight is not None or pending:
                raise ExportError(f"{name}: max-pooling must directly follow a TTFS neuron")
            if module.stride not in (None, module.kernel_size) or module.padding != 0:
                raise ExportError(f"{name}: only non-overlapping max-pooling without padding "
                                  "(stride = kernel_size) is supported")
            stages.append(MaxPoolStage(_int(module.kernel_size), name))
        elif isinstance(module, (nn.AvgPool2d, nn.Flatten)):
            if weight is not None:
                raise ExportError(f"{name}: pooling/flatten after a weight op needs a TTFS "
                                  "neuron in between")
            pending.append(copy.deepcopy(module))
        else:
            raise ExportError(f"cannot convert module {name!r} ({type(module).__name__}); "
                              f"supported: {', '.join(SUPPORTED)}")
    if weight is None:
        raise ExportError("the network must end with an output weight op (Linear) whose "
                          "membrane gives the logits")
    flush_synapse()
    stages.append(ReadoutStage(layer + 1, "output"))
    return stages


def _int(value) -> int:
    return int(value[0]) if isinstance(value, (tuple, list)) else int(value)


# --- saving an exported network: stages <-> a plain description --------------------------------

EXPORT_FORMAT = "ttfs-plugin/exported-network"


def describe_op(op: nn.Module) -> list:
    """Plain description of a synapse's linear op (rebuilt by :func:`build_op`)."""
    parts = list(op) if isinstance(op, nn.Sequential) else [op]
    out = []
    for part in parts:
        if isinstance(part, nn.Conv2d):
            out.append(["Conv2d", {"in_channels": part.in_channels,
                                   "out_channels": part.out_channels,
                                   "kernel_size": list(part.kernel_size),
                                   "stride": list(part.stride), "padding": list(part.padding),
                                   "bias": False}])
        elif isinstance(part, nn.Linear):
            out.append(["Linear", {"in_features": part.in_features,
                                   "out_features": part.out_features, "bias": False}])
        elif isinstance(part, nn.AvgPool2d):
            out.append(["AvgPool2d", {"kernel_size": part.kernel_size, "stride": part.stride}])
        elif isinstance(part, nn.Flatten):
            out.append(["Flatten", {"start_dim": part.start_dim, "end_dim": part.end_dim}])
        else:
            raise ExportError(f"cannot describe {type(part).__name__} for saving")
    return out


_OPS = {"Conv2d": nn.Conv2d, "Linear": nn.Linear, "AvgPool2d": nn.AvgPool2d,
        "Flatten": nn.Flatten}


def build_op(description: list) -> nn.Module:
    parts = [_OPS[kind](**kwargs) for kind, kwargs in description]
    return parts[0] if len(parts) == 1 else nn.Sequential(*parts)


def stages_to_spec(stages: list[Stage]) -> list[dict]:
    """JSON-like description of a plan (weights and kernel values go in the state dict)."""
    spec = []
    for st in stages:
        if isinstance(st, NeuronStage):
            spec.append({"kind": "neuron", "index": st.index, "T": st.kernel.T,
                         "theta0": st.kernel.theta0, "name": st.name})
        elif isinstance(st, SynapseStage):
            spec.append({"kind": "synapse", "source": st.source, "op": describe_op(st.op),
                         "bias": st.bias is not None, "name": st.name})
        elif isinstance(st, MaxPoolStage):
            spec.append({"kind": "maxpool", "kernel_size": st.kernel_size, "name": st.name})
        else:
            spec.append({"kind": "readout", "index": st.index, "name": st.name})
    return spec


def spec_to_stages(spec: list[dict]) -> list[Stage]:
    """Stages with fresh modules in the shape ``spec`` describes (load weights afterwards)."""
    stages: list[Stage] = []
    kernels: dict[int, TemporalKernel] = {}
    try:
        for item in spec:
            kind = item["kind"]
            if kind == "neuron":
                kernels[item["index"]] = TemporalKernel(item["T"], theta0=item["theta0"])
                stages.append(NeuronStage(item["index"], kernels[item["index"]], item["name"]))
            elif kind == "synapse":
                op = build_op(item["op"])
                bias = None
                if item["bias"]:
                    last = op[-1] if isinstance(op, nn.Sequential) else op
                    bias = torch.zeros(last.weight.shape[0])
                stages.append(SynapseStage(item["source"], kernels[item["source"]], op, bias,
                                           item["name"]))
            elif kind == "maxpool":
                stages.append(MaxPoolStage(item["kernel_size"], item["name"]))
            elif kind == "readout":
                stages.append(ReadoutStage(item["index"], item["name"]))
            else:
                raise KeyError(kind)
    except (KeyError, TypeError, IndexError) as exc:
        raise ExportError(f"not a valid exported-network description ({exc!r})") from None
    return stages


def save_exported(path, net: nn.Module, stages_spec: list[dict], framework: str) -> None:
    """Write an exported network: its description, dtype and state dict (atomically)."""
    from .checkpoint import atomic_torch_save

    dtypes = {p.dtype for p in net.parameters()}
    dtype = str(dtypes.pop()).replace("torch.", "") if len(dtypes) == 1 else "float32"
    atomic_torch_save({"format": EXPORT_FORMAT, "framework": framework, "version": 1,
                       "stages": stages_spec, "dtype": dtype,
                       "state_dict": net.state_dict()}, path)


def read_exported(path, framework: str) -> dict:
    """The saved dict of an exported network, with clear errors for a wrong or damaged file."""
    from pathlib import Path

    from .errors import CheckpointError

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
    if data.get("framework") != framework:
        raise CheckpointError(f"{path} was exported for {data.get('framework')!r}, not "
                              f"{framework!r}; load it with ttfs_plugin.{data.get('framework')}"
                              ".load")
    return data
