"""NIR: a TTFS network as a Neuromorphic Intermediate Representation graph, and back.

:func:`to_nir` writes the export plan (:mod:`ttfs_plugin.export`) as standard NIR nodes — each
neuron layer an ``IF``, each weight op an ``Affine``/``Conv2d`` (batch norm folded), avg-pooling
``AvgPool2d``, flattening ``Flatten`` — and puts what NIR's time-invariant primitives cannot say
(the window schedule, the decaying threshold ``theta0·kappa_l(k)``, the kernel-weighted value of
a spike, the once-only bias, first-spike max-pooling) into ``ttfs.*`` metadata, following the
versioned convention of docs/nir.md. :func:`from_nir` reads that metadata and rebuilds the exact
network in snnTorch or Norse: same spike times, spike counts and logits as ``to_snntorch`` /
``to_norse`` of the same model.

>>> from ttfs_plugin import nir as tnir
>>> tnir.write(model, "net.nir")                    # a trained surrogate or an exported net
>>> net = tnir.from_nir("net.nir", backend="norse")  # the same network, in Norse

Standard NIR readers that ignore the metadata (``snntorch.import_from_nir``,
``norse.torch.from_nir``) see a rate-coded IF network with the same weights: docs/nir.md says
what they run and how far it agrees.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import numpy as np
import torch
from torch import Tensor, nn

try:
    import nir
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("ttfs_plugin.nir needs the NIR package: pip install 'ttfs-plugin[nir]'"
                      ) from exc

from . import __version__, export
from .checkpoint import new_file_mode
from .errors import CheckpointError, ConfigError
from .layers import TemporalKernel
from .roles import exportable_modules
from .timestep import check_input_mode

CONVENTION = "ttfs-plugin/nir"
CONVENTION_VERSION = 2  # 2: neurons carry "ttfs.quantizer" and "ttfs.relay"
#: Versions this reader understands; a version-1 file has neither key: it was "ceil", no relay.
READABLE_VERSIONS = (1, 2)
V1_QUANTIZER = "ceil"
PREFIX = "ttfs."
DTYPES = ("float32", "float64")

# roles of the nodes (metadata key "ttfs.role"); docs/nir.md describes each
NEURON, SYNAPSE, SYNAPSE_PART, MAXPOOL = "neuron", "synapse", "synapse_part", "first_spike_maxpool"
# every metadata key the convention defines, by where it sits (docs/nir.md explains each)
KEYS = {
    "graph": ("convention", "version", "T", "output", "dtype", "readout_index", "writer",
              "dataset"),
    NEURON: ("role", "layer_index", "T", "tau", "td", "tau0", "td0", "theta0", "quantizer",
             "input_mode", "output", "relay"),
    SYNAPSE: ("role", "source", "bias"),
    SYNAPSE_PART: ("role",),
    MAXPOOL: ("role", "kernel_size"),
}


class NIRFormatError(CheckpointError):
    """A NIR graph or file that is not a TTFS network of a convention version this reader knows."""


# --- writing ------------------------------------------------------------------------------------


def _meta(**values) -> dict:
    return {PREFIX + k: v for k, v in values.items()}


def _array(t: Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().copy()


def _stages_and_shape(source: nn.Module, input_shape, output: str | None,
                      input_mode: str | None) -> tuple[list[export.Stage], tuple]:
    """The stages of a surrogate model or an exported net, and the input shape (no batch)."""
    if not isinstance(source, nn.Module):
        raise ConfigError(f"to_nir takes a TTFS model or an exported network, got "
                          f"{type(source).__name__}")
    if exportable_modules(source):
        stages = export.stages_of(source)
        neurons = [st for st in stages if isinstance(st, export.NeuronStage)]
        has = ("spikes" if neurons and neurons[-1].output else "membrane",
               neurons[0].input_mode if neurons else "analog")
        for asked, actual, what in ((output, has[0], "output"), (input_mode, has[1],
                                                                   "input_mode")):
            if asked is not None and asked != actual:
                raise ConfigError(f"this exported network has {what}={actual!r}, not "
                                  f"{asked!r}; convert the surrogate again with {what}="
                                  f"{asked!r}")
    else:
        stages = export.plan_network(source, output or "membrane", input_mode or "analog")
    if input_shape is None:
        config = getattr(source, "config", None)
        input_shape = getattr(config, "in_shape", None)
    if input_shape is None:
        first = next(st for st in stages if isinstance(st, export.SynapseStage))
        parts = list(first.op) if isinstance(first.op, nn.Sequential) else [first.op]
        if isinstance(parts[0], nn.Linear):
            input_shape = (parts[0].in_features,)
    if input_shape is None:
        raise ConfigError("the input shape cannot be read from this network; pass "
                          "input_shape=(C, H, W) (without the batch dimension)")
    shape = tuple(int(n) for n in input_shape)
    if not shape or any(n <= 0 for n in shape):
        raise ConfigError(f"input_shape must be positive sizes without the batch dimension, "
                          f"got {tuple(input_shape)}")
    return stages, shape


def _probe(op: nn.Module, shape: tuple, dtype: torch.dtype) -> tuple:
    try:
        with torch.no_grad():
            return tuple(op(torch.zeros(1, *shape, dtype=dtype)).shape[1:])
    except RuntimeError as exc:
        raise ConfigError(f"an input of shape {shape} does not fit the network "
                          f"({str(exc).splitlines()[0]}); pass the right input_shape") from None


def _synapse_nodes(stage: export.SynapseStage, shape: tuple, dtype: torch.dtype):
    """The NIR nodes of one synapse (its linear parts, the weight op last) and its output shape."""
    parts = list(stage.op) if isinstance(stage.op, nn.Sequential) else [stage.op]
    nodes = []
    for i, part in enumerate(parts):
        out = _probe(part, shape, dtype)
        is_weight = i == len(parts) - 1
        name = stage.name if is_weight else f"{stage.name}.part{i}"
        if is_weight:
            bias = stage.bias if stage.bias is not None else torch.zeros(out[0], dtype=dtype)
            meta = _meta(role=SYNAPSE, source=stage.source,
                         bias="once" if stage.bias is not None else "none")
        else:
            meta = _meta(role=SYNAPSE_PART)
        if isinstance(part, nn.Linear) and is_weight:
            node = nir.Affine(weight=_array(part.weight), bias=_array(bias), metadata=meta)
        elif isinstance(part, nn.Conv2d) and is_weight:
            node = nir.Conv2d(input_shape=shape[1:], weight=_array(part.weight),
                              stride=tuple(part.stride), padding=tuple(part.padding),
                              dilation=tuple(part.dilation), groups=part.groups,
                              bias=_array(bias), metadata=meta)
        elif isinstance(part, nn.AvgPool2d) and not is_weight:
            if part.padding not in (0, (0, 0)):
                raise export.ExportError(f"{stage.name}: NIR's AvgPool2d does not say how "
                                         "padding is counted; export avg-pooling without "
                                         "padding")
            node = nir.AvgPool2d(kernel_size=np.array(_pair(part.kernel_size)),
                                 stride=np.array(_pair(part.stride or part.kernel_size)),
                                 padding=np.array([0, 0]), metadata=meta)
        elif isinstance(part, nn.Flatten) and not is_weight:
            start, end = (d - 1 if d > 0 else d for d in (part.start_dim, part.end_dim))
            node = nir.Flatten(input_type={"input": np.array(shape)}, start_dim=start,
                               end_dim=end, metadata=meta)
        elif isinstance(part, nn.Identity) and not is_weight:
            shape = out
            continue
        else:
            raise export.ExportError(f"{stage.name}: {type(part).__name__} has no NIR node here")
        nodes.append((name, node))
        shape = out
    return nodes, shape


def _free(name: str, taken: set[str]) -> str:
    """``name``, or ``name_1``, ``name_2`` … if a layer is already called so."""
    candidate, n = name, 0
    while candidate in taken:
        n += 1
        candidate = f"{name}_{n}"
    return candidate


def _pair(value) -> list[int]:
    values = np.asarray(value).reshape(-1)
    return [int(values[0])] * 2 if values.size == 1 else [int(v) for v in values]


def _pair2(value) -> tuple[int, int]:
    """:func:`_pair` as the tuple torch's 2-d modules take (a NIR 2-d field has two values)."""
    return cast("tuple[int, int]", tuple(_pair(value)))


def to_nir(source: nn.Module, input_shape: Sequence[int] | None = None, *,
           output: str | None = None, input_mode: str | None = None,
           dataset: dict | None = None) -> nir.NIRGraph:
    """``source`` (a trained surrogate, or a net of the plugin's snnTorch/Norse modules) as a
    NIR graph that follows the ``ttfs-plugin/nir`` convention (docs/nir.md).

    ``input_shape`` (no batch dimension) is read from a ``TTFSNetwork`` 's config or an MLP's
    first ``Linear``; pass it otherwise. ``output`` (``"membrane"`` or ``"spikes"``) and
    ``input_mode`` (``"analog"`` or ``"spikes"``) are as in ``to_snntorch`` (an exported net keeps
    its own). ``dataset`` (optional, e.g. the run's dataset record) is stored as JSON so
    ``ttfs evaluate net.nir`` can find the data again.
    """
    stages, shape = _stages_and_shape(source, input_shape, output, input_mode)
    params = list(source.parameters())
    dtype = params[0].dtype if params else torch.float32
    if str(dtype).replace("torch.", "") not in DTYPES:
        raise ConfigError(f"NIR export needs float32 or float64 weights, got {dtype}")
    taken = {st.name for st in stages}
    input_name, output_name = (_free(n, taken) for n in ("input", "output"))
    nodes: dict[str, nir.NIRNode] = {input_name: nir.Input(input_type={"input": np.array(shape)})}
    chain = [input_name]
    readout_index = None
    T = stages[0].kernel.T if isinstance(stages[0], export.NeuronStage) else None
    for stage in stages:
        if isinstance(stage, export.NeuronStage):
            k = stage.kernel
            np_dtype = _array(k.tau).dtype
            meta = _meta(role=NEURON, layer_index=stage.index, T=k.T, tau=k.tau.item(),
                         td=k.td.item(), tau0=k.tau0.item(), td0=k.td0.item(),
                         theta0=float(k.theta0), quantizer=k.quantizer,
                         input_mode=stage.input_mode,
                         output=bool(stage.output), relay=bool(stage.relay))
            nodes[stage.name] = nir.IF(r=np.ones(shape, np_dtype),
                                       v_threshold=np.full(shape, k.theta0, np_dtype),
                                       v_reset=np.zeros(shape, np_dtype), metadata=meta)
            chain.append(stage.name)
        elif isinstance(stage, export.MaxPoolStage):
            size = stage.kernel_size
            nodes[stage.name] = nir.AvgPool2d(
                kernel_size=np.array([size, size]), stride=np.array([size, size]),
                padding=np.array([0, 0]), metadata=_meta(role=MAXPOOL, kernel_size=size))
            chain.append(stage.name)
            shape = (shape[0], shape[1] // size, shape[2] // size)
        elif isinstance(stage, export.SynapseStage):
            parts, shape = _synapse_nodes(stage, shape, dtype)
            for name, node in parts:
                nodes[name] = node
                chain.append(name)
        elif isinstance(stage, export.ReadoutStage):
            readout_index = stage.index
        else:  # pragma: no cover - a new stage kind needs its NIR mapping here
            raise export.ExportError(f"stage kind {stage.kind!r} has no NIR mapping yet")
    nodes[output_name] = nir.Output(output_type={"output": np.array(shape)})
    chain.append(output_name)
    meta = _meta(convention=CONVENTION, version=CONVENTION_VERSION, T=T,
                 output="membrane" if readout_index is not None else "spikes",
                 dtype=str(dtype).replace("torch.", ""), writer=f"ttfs-plugin {__version__}")
    if readout_index is not None:
        meta[PREFIX + "readout_index"] = readout_index
    if dataset:
        meta[PREFIX + "dataset"] = json.dumps(dataset)
    return nir.NIRGraph(nodes=nodes, edges=list(zip(chain[:-1], chain[1:])), metadata=meta)


def write(source: nn.Module | nir.NIRGraph, path: str | Path, **to_nir_options) -> Path:
    """Write ``source`` (a graph from :func:`to_nir`, or a network with ``to_nir``'s options)
    to ``path``. The file appears whole or not at all: it is written next to ``path`` and
    renamed.
    """
    graph = source if isinstance(source, nir.NIRGraph) else to_nir(source, **to_nir_options)
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; give a file name such as {path / 'net.nir'}")
    if not path.parent.is_dir():
        raise ConfigError(f"folder {path.parent} does not exist; create it first")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        nir.write(tmp, graph)
        os.chmod(tmp, new_file_mode())
        os.replace(tmp, path)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


# --- reading ------------------------------------------------------------------------------------


def read(path: str | Path) -> nir.NIRGraph:
    """The NIR graph in ``path``, with one clear error for a missing, damaged or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise NIRFormatError(f"no NIR file at {path}; write one with 'ttfs export CKPT "
                             "--backend nir --out FILE' or ttfs_plugin.nir.write")
    try:
        import h5py

        if not h5py.is_hdf5(path):
            raise NIRFormatError(f"{path} is not a NIR file (not HDF5); write it with "
                                 "ttfs_plugin.nir.write")
        with h5py.File(path, "r") as f:
            types = {_text(f["node"]["nodes"][n]["type"][()]) for n in f["node"]["nodes"]}
    except NIRFormatError:
        raise
    except Exception as exc:  # h5py raises OSError, KeyError, … for damaged files
        raise NIRFormatError(f"{path} is truncated or not a NIR file ({type(exc).__name__}); "
                             "write it again") from None
    unknown = sorted(t for t in types if not hasattr(nir, t) or t == "NIRNode")
    if unknown:
        raise NIRFormatError(f"{path} holds node types {unknown} that nir "
                             f"{getattr(nir, 'version', '?')} does not know; it was written for "
                             "another NIR version or tool")
    try:
        return nir.read(path)
    except ValueError as exc:
        raise NIRFormatError(f"{path}: the NIR reader (nir {getattr(nir, 'version', '?')}) "
                             f"refused it: {str(exc).splitlines()[0] if str(exc) else exc!r}"
                             ) from None
    except Exception as exc:  # h5py raises OSError, KeyError, … for damaged files
        raise NIRFormatError(f"{path} is truncated or not a NIR file ({type(exc).__name__}); "
                             "write it again") from None


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _value(meta: dict, key: str, where: str, kind):
    if PREFIX + key not in meta:
        raise NIRFormatError(f"{where} lacks metadata key {PREFIX + key!r} of the "
                             f"{CONVENTION} convention (docs/nir.md); the file is incomplete")
    value = meta[PREFIX + key]
    value = value.item() if isinstance(value, np.generic) else value
    if isinstance(value, bytes):
        value = value.decode()
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise NIRFormatError(f"{where}: metadata {PREFIX + key!r} = {value!r} is not a valid "
                             f"{kind.__name__}")
    return kind(value)


def _chain(graph: nir.NIRGraph) -> list[str]:
    """Node names from the single Input to the single Output (a TTFS network is a chain)."""
    inputs = [n for n, node in graph.nodes.items() if isinstance(node, nir.Input)]
    successors: dict[str, list[str]] = {}
    for a, b in graph.edges:
        successors.setdefault(a, []).append(b)
    if len(inputs) != 1:
        raise NIRFormatError(f"a TTFS network has one Input node, this graph has {len(inputs)}")
    chain = inputs
    while True:
        nxt = successors.get(chain[-1], [])
        if not nxt:
            break
        if len(nxt) > 1 or nxt[0] in chain:
            raise NIRFormatError(f"node {chain[-1]!r} branches or loops; a TTFS network is a "
                                 "feed-forward chain")
        chain.append(nxt[0])
    if not isinstance(graph.nodes[chain[-1]], nir.Output) or len(chain) != len(graph.nodes):
        raise NIRFormatError("the graph is not one chain from Input to Output")
    return chain


def _kernel(meta: dict, where: str, version: int) -> TemporalKernel:
    T = _value(meta, "T", where, int)
    theta0 = _value(meta, "theta0", where, float)
    quantizer = V1_QUANTIZER if version == 1 else _value(meta, "quantizer", where, str)
    try:
        kernel = TemporalKernel(T, theta0=theta0, quantizer=quantizer)
    except ValueError as exc:
        raise NIRFormatError(f"{where}: {exc}") from None
    with torch.no_grad():
        for key in ("tau", "td", "tau0", "td0"):
            getattr(kernel, key).fill_(_value(meta, key, where, float))
    return kernel


def _weight_module(name: str, node, pending: list[nn.Module]) -> tuple[nn.Module, Tensor]:
    if isinstance(node, nir.Affine):
        weight = torch.from_numpy(np.asarray(node.weight).copy())
        op: nn.Linear | nn.Conv2d = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    elif isinstance(node, nir.Conv2d):
        weight = torch.from_numpy(np.asarray(node.weight).copy())
        if isinstance(node.padding, str):
            raise NIRFormatError(f"node {name!r}: padding {node.padding!r} is not supported; "
                                 "a TTFS synapse uses integer padding")
        op = nn.Conv2d(weight.shape[1] * int(node.groups), weight.shape[0],
                       (weight.shape[-2], weight.shape[-1]), stride=_pair2(node.stride),
                       padding=_pair2(node.padding), dilation=_pair2(node.dilation),
                       groups=int(node.groups), bias=False)
    else:
        raise NIRFormatError(f"node {name!r}: a synapse ends in an Affine or Conv2d, not "
                             f"{type(node).__name__}")
    op = op.to(weight.dtype)
    with torch.no_grad():
        op.weight.copy_(weight)
    bias = torch.from_numpy(np.asarray(node.bias).copy())
    return (nn.Sequential(*pending, op) if pending else op), bias


def _part_module(name: str, node) -> nn.Module:
    if isinstance(node, nir.AvgPool2d):
        if np.any(np.asarray(node.padding) != 0):
            raise NIRFormatError(f"node {name!r}: avg-pooling with padding is not supported")
        return nn.AvgPool2d(_pair2(node.kernel_size), _pair2(node.stride))
    if isinstance(node, nir.Flatten):
        start, end = (d + 1 if d >= 0 else d for d in (node.start_dim, node.end_dim))
        return nn.Flatten(start, end)
    raise NIRFormatError(f"node {name!r}: a synapse part is an AvgPool2d or Flatten, not "
                         f"{type(node).__name__}")


def stages_from_nir(graph: nir.NIRGraph) -> tuple[list[export.Stage], torch.dtype, tuple]:
    """The export stages a ``ttfs-plugin/nir`` graph describes, its dtype and input shape."""
    if not isinstance(graph, nir.NIRGraph):
        raise NIRFormatError(f"expected a nir.NIRGraph or a path, got {type(graph).__name__}")
    meta = dict(graph.metadata or {})
    if PREFIX + "convention" not in meta:
        raise NIRFormatError("this NIR graph is not a TTFS network (no 'ttfs.convention' "
                             "metadata): ttfs_plugin.nir reads graphs written by to_nir; read "
                             "other graphs with your framework's own NIR importer")
    convention = _value(meta, "convention", "the graph", str)
    version = _value(meta, "version", "the graph", int)
    if convention != CONVENTION:
        raise NIRFormatError(f"the graph follows convention {convention!r}, not {CONVENTION!r}")
    if version not in READABLE_VERSIONS:
        raise NIRFormatError(f"the graph uses {CONVENTION} version {version}; this "
                             f"ttfs-plugin reads versions {', '.join(map(str, READABLE_VERSIONS))}"
                             ": upgrade ttfs-plugin or write the file again")
    dtype_name = _value(meta, "dtype", "the graph", str)
    if dtype_name not in DTYPES:
        raise NIRFormatError(f"the graph's dtype {dtype_name!r} is not one of {DTYPES}")
    output = _value(meta, "output", "the graph", str)
    if output not in export.OUTPUT_MODES:
        raise NIRFormatError(f"the graph's output {output!r} is not one of "
                             f"{export.OUTPUT_MODES}")
    T = _value(meta, "T", "the graph", int)
    chain = _chain(graph)
    input_shape = input_shape_of(graph)
    stages: list[export.Stage] = []
    kernels: dict[int, TemporalKernel] = {}
    pending: list[nn.Module] = []
    for name in chain[1:-1]:
        node = graph.nodes[name]
        where = f"node {name!r} ({type(node).__name__})"
        role = _value(node.metadata or {}, "role", where, str)
        if role == NEURON:
            if not isinstance(node, nir.IF):
                raise NIRFormatError(f"{where}: a TTFS neuron is written as an IF node")
            kernel = _kernel(node.metadata, where, version)
            if kernel.T != T:
                raise NIRFormatError(f"{where}: T={kernel.T} differs from the graph's T={T}")
            index = _value(node.metadata, "layer_index", where, int)
            if index != len(kernels):
                raise NIRFormatError(f"{where}: layer_index {index}, expected {len(kernels)}")
            mode = _value(node.metadata, "input_mode", where, str)
            try:
                check_input_mode(mode)
            except ConfigError as exc:
                raise NIRFormatError(f"{where}: {exc}") from None
            kernels[index] = kernel
            relay = False if version == 1 else _value(node.metadata, "relay", where, bool)
            if relay and (index != 0 or float(kernel.td.detach()) != 0.0):
                raise NIRFormatError(f"{where}: only layer 0 can relay (ttfs.relay), and its "
                                     "ttfs.td must be 0")
            stages.append(export.NeuronStage(name, index, kernel, mode,
                                             _value(node.metadata, "output", where, bool),
                                             relay))
        elif role == MAXPOOL:
            stages.append(export.MaxPoolStage(name, _value(node.metadata, "kernel_size", where,
                                                           int)))
        elif role == SYNAPSE_PART:
            pending.append(_part_module(name, node))
        elif role == SYNAPSE:
            source = _value(node.metadata, "source", where, int)
            if source not in kernels:
                raise NIRFormatError(f"{where}: source layer {source} comes before no neuron")
            op, bias = _weight_module(name, node, pending)
            has_bias = _value(node.metadata, "bias", where, str)
            if has_bias not in ("once", "none"):
                raise NIRFormatError(f"{where}: metadata 'ttfs.bias' must be 'once' or 'none'")
            stages.append(export.SynapseStage(name, source, kernels[source], op,
                                              bias if has_bias == "once" else None))
            pending = []
        else:
            raise NIRFormatError(f"{where}: role {role!r} is not part of the {CONVENTION} "
                                 "convention")
    if pending:
        raise NIRFormatError("the graph ends in synapse parts without their weight op")
    if output == "membrane":
        stages.append(export.ReadoutStage("readout",
                                          _value(meta, "readout_index", "the graph", int)))
    if not kernels or not isinstance(stages[-1], (export.ReadoutStage, export.NeuronStage)):
        raise NIRFormatError("the graph holds no complete TTFS network (neurons, synapses and "
                             "an output)")
    return stages, getattr(torch, dtype_name), input_shape


def from_nir(graph: nir.NIRGraph | str | Path, backend: str = "snntorch", **options
             ) -> nn.Module:
    """The network of a ``ttfs-plugin/nir`` graph (or file) built in ``backend``.

    ``options`` go to the adapter's factories (``spike_grad`` for snnTorch; ``method``,
    ``alpha`` for Norse). The result equals ``to_snntorch`` / ``to_norse`` of the model the
    file was written from, spike for spike.
    """
    from .simulation import load_adapter

    if isinstance(graph, (str, Path)):
        graph = read(graph)
    adapter = load_adapter(backend)
    stages, dtype, _ = stages_from_nir(graph)
    return export.build(stages, adapter.BACKEND, **options).to(dtype)


def input_shape_of(graph: nir.NIRGraph) -> tuple[int, ...]:
    """The input shape (no batch) the graph's ``Input`` node declares."""
    return tuple(int(n) for n in np.asarray(graph.nodes[_chain(graph)[0]].input_type["input"]))


def dataset_of(graph: nir.NIRGraph) -> dict | None:
    """The dataset record stored by ``ttfs export`` (name, data_dir, options), if any."""
    raw = (graph.metadata or {}).get(PREFIX + "dataset")
    if raw is None:
        return None
    try:
        record = json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
    except ValueError:
        raise NIRFormatError("metadata 'ttfs.dataset' is not valid JSON") from None
    return record if isinstance(record, dict) else None


__all__ = ["CONVENTION", "CONVENTION_VERSION", "NIRFormatError", "to_nir", "write", "read",
           "stages_from_nir", "from_nir", "input_shape_of", "dataset_of"]
