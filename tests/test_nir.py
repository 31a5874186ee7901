"""NIR: file round trip into both frameworks, the convention's metadata, bad files, the CLI,
and what the frameworks' own NIR readers do with the file (pinned as docs/nir.md states it)."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

nir = pytest.importorskip("nir")
pytest.importorskip("snntorch")
pytest.importorskip("norse")

from test_snntorch import CASES, randomise_batch_norm  # noqa: E402

from ttfs_plugin import export  # noqa: E402
from ttfs_plugin import nir as tnir  # noqa: E402
from ttfs_plugin import norse as tnorse  # noqa: E402
from ttfs_plugin import snntorch as tsnn  # noqa: E402
from ttfs_plugin.cli import main  # noqa: E402
from ttfs_plugin.errors import ConfigError  # noqa: E402
from ttfs_plugin.layers import TemporalKernel  # noqa: E402
from ttfs_plugin.models import small_cnn  # noqa: E402

ADAPTERS = {"snntorch": (tsnn, tsnn.to_snntorch), "norse": (tnorse, tnorse.to_norse)}
DOCS = Path(__file__).resolve().parents[1] / "docs" / "nir.md"


def case_model(case, dtype):
    build, shape = CASES[case]
    torch.manual_seed(0)
    return randomise_batch_norm(build()).to(dtype), torch.rand(*shape, dtype=dtype)


def same_result(a, b):
    assert a.spike_times.keys() == b.spike_times.keys()
    assert torch.equal(a.logits, b.logits)
    for name in a.spike_times:
        assert torch.equal(a.spike_times[name], b.spike_times[name]), name
        assert torch.equal(a.spike_counts[name], b.spike_counts[name]), name


@pytest.mark.parametrize("backend", list(ADAPTERS))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", list(CASES))
def test_file_round_trip_equals_the_direct_export(tmp_path, case, dtype, backend):
    """nir.write → nir.read → from_nir gives the to_snntorch / to_norse network, spike for
    spike (exactly, in float32 as well as float64: same weights, same step rules)."""
    adapter, convert = ADAPTERS[backend]
    model, x = case_model(case, dtype)
    nir.write(tmp_path / "net.nir", tnir.to_nir(model))
    net = tnir.from_nir(nir.read(tmp_path / "net.nir"), backend)
    assert next(net.parameters()).dtype == dtype
    with torch.no_grad():
        same_result(adapter.simulate(convert(model), x), adapter.simulate(net, x))


def test_an_exported_net_crosses_frameworks_through_nir(tmp_path):
    model, x = case_model("cnn-max", torch.float64)
    snn_net = tsnn.to_snntorch(model)
    with torch.no_grad():  # fine-tuned: the file holds what the net holds now
        for p in snn_net.parameters():
            p.mul_(1.05)
    tnir.write(snn_net, tmp_path / "tuned.nir", input_shape=(1, 28, 28))
    norse_net = tnir.from_nir(tmp_path / "tuned.nir", "norse")
    with torch.no_grad():
        same_result(tsnn.simulate(snn_net, x), tnorse.simulate(norse_net, x))
    again = tnir.to_nir(norse_net, input_shape=(1, 28, 28))
    for name, node in tnir.to_nir(snn_net, input_shape=(1, 28, 28)).nodes.items():
        assert node.metadata == again.nodes[name].metadata


@pytest.mark.parametrize("backend", list(ADAPTERS))
def test_spiking_output_and_spike_train_input_round_trip(tmp_path, backend):
    adapter, convert = ADAPTERS[backend]
    model, x = case_model("mlp", torch.float64)
    tnir.write(model, tmp_path / "s.nir", output="spikes", input_mode="spikes")
    net = tnir.from_nir(tmp_path / "s.nir", backend)
    direct = convert(model, output="spikes", input_mode="spikes")
    train = tsnn.input_spike_train(x, direct)
    with torch.no_grad():
        a, b = adapter.simulate(direct, train), adapter.simulate(net, train)
    same_result(a, b)
    assert torch.equal(a.first_spike_prediction, b.first_spike_prediction)
    with pytest.raises(ConfigError, match="output='spikes'"):
        tnir.to_nir(net, output="membrane")


def test_standard_nodes_carry_the_folded_weights():
    model, _ = case_model("cnn-avg", torch.float64)
    graph = tnir.to_nir(model)
    stages = export.plan_network(model)
    types = [type(node).__name__ for node in graph.nodes.values()]
    assert types.count("IF") == sum(isinstance(s, export.NeuronStage) for s in stages)
    for st in stages:
        if isinstance(st, export.SynapseStage):
            node = graph.nodes[st.name]
            op = st.op[-1] if isinstance(st.op, nn.Sequential) else st.op
            assert np.array_equal(node.weight, op.weight.detach().numpy())
            assert np.array_equal(node.bias, st.bias.numpy())
        if isinstance(st, export.NeuronStage):
            meta = graph.nodes[st.name].metadata
            assert meta["ttfs.tau"] == st.kernel.tau.item()
            assert np.all(graph.nodes[st.name].v_threshold == st.kernel.theta0)
    assert graph.metadata["ttfs.convention"] == tnir.CONVENTION


def test_docs_describe_every_metadata_key():
    text = DOCS.read_text()
    for where, keys in tnir.KEYS.items():
        for key in keys:
            assert f"`ttfs.{key}`" in text, (where, key)
    for role in (tnir.NEURON, tnir.SYNAPSE, tnir.SYNAPSE_PART, tnir.MAXPOOL):
        assert f"`{role}`" in text
    graph = tnir.to_nir(case_model("cnn-max", torch.float32)[0], output="membrane")
    written = set(graph.metadata) | {k for n in graph.nodes.values() for k in n.metadata}
    known = {f"ttfs.{k}" for keys in tnir.KEYS.values() for k in keys}
    assert written <= known


# --- bad files ----------------------------------------------------------------------------------


@pytest.fixture
def good_file(tmp_path):
    path = tmp_path / "good.nir"
    tnir.write(case_model("mlp", torch.float32)[0], path)
    return path


def rewrite(path, change):
    graph = nir.read(path)
    change(graph)
    out = path.with_name("changed.nir")
    nir.write(out, graph)
    return out


def test_a_graph_that_is_not_a_ttfs_network(tmp_path):
    ones = np.ones(3)
    lif_net = nir.NIRGraph.from_list(
        nir.Input(input_type={"input": np.array([4])}),
        nir.Affine(weight=np.ones((3, 4)), bias=np.zeros(3)),
        nir.LIF(tau=ones * 0.01, r=ones, v_leak=0 * ones, v_threshold=ones),
        nir.Output(output_type={"output": np.array([3])}))
    nir.write(tmp_path / "lif.nir", lif_net)
    with pytest.raises(tnir.NIRFormatError, match="not a TTFS network"):
        tnir.from_nir(tmp_path / "lif.nir", "snntorch")


def test_a_missing_metadata_key_is_named(good_file):
    def drop(graph):
        del graph.nodes["ttfs1"].metadata["ttfs.tau"]
    with pytest.raises(tnir.NIRFormatError, match=r"'ttfs1'.*lacks metadata key 'ttfs.tau'"):
        tnir.from_nir(rewrite(good_file, drop), "norse")


def test_an_unknown_version_is_refused(good_file):
    def bump(graph):
        graph.metadata["ttfs.version"] = 99
    with pytest.raises(tnir.NIRFormatError, match="version 99.*reads versions 1, 2"):
        tnir.from_nir(rewrite(good_file, bump), "snntorch")


def test_a_version_1_file_reads_as_ceil(good_file):
    def as_version_1(graph):
        graph.metadata["ttfs.version"] = 1
        for node in graph.nodes.values():
            (node.metadata or {}).pop("ttfs.quantizer", None)
    net = tnir.from_nir(rewrite(good_file, as_version_1), "snntorch")
    kernels = [m for m in net.modules() if isinstance(m, TemporalKernel)]
    assert kernels and all(k.quantizer == "ceil" for k in kernels)


def test_bad_metadata_values_and_roles(good_file):
    def nan_tau(graph):
        graph.nodes["ttfs1"].metadata["ttfs.tau"] = float("nan")
    with pytest.raises(tnir.NIRFormatError, match="not a valid float"):
        tnir.from_nir(rewrite(good_file, nan_tau), "snntorch")

    def odd_role(graph):
        graph.nodes["ttfs1"].metadata["ttfs.role"] = "dendrite"
    with pytest.raises(tnir.NIRFormatError, match="role 'dendrite'"):
        tnir.from_nir(rewrite(good_file, odd_role), "snntorch")

    graph = nir.read(good_file)  # nir.read's type check would refuse this one in a file
    graph.edges.append(("input", "fc2"))
    with pytest.raises(tnir.NIRFormatError, match="branches"):
        tnir.from_nir(graph, "snntorch")


def test_truncated_missing_and_foreign_files(good_file, tmp_path):
    data = good_file.read_bytes()
    cut = tmp_path / "cut.nir"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(tnir.NIRFormatError, match="truncated or not a NIR file"):
        tnir.from_nir(cut, "snntorch")
    text = tmp_path / "notes.nir"
    text.write_text("hello")
    with pytest.raises(tnir.NIRFormatError, match="not a NIR file"):
        tnir.read(text)
    with pytest.raises(tnir.NIRFormatError, match="no NIR file"):
        tnir.read(tmp_path / "missing.nir")


def test_a_failed_write_keeps_the_old_file(good_file, monkeypatch):
    before = good_file.read_bytes()

    def broken(path, graph):
        Path(path).write_bytes(b"partial")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(nir, "write", broken)
    with pytest.raises(ConfigError, match="No space left"):
        tnir.write(case_model("mlp", torch.float32)[0], good_file)
    assert good_file.read_bytes() == before
    assert sorted(p.name for p in good_file.parent.iterdir()) == ["good.nir"]
    with pytest.raises(ConfigError, match="does not exist"):
        tnir.write(tnir.read(good_file), good_file.parent / "no" / "net.nir")


def test_input_shape_is_needed_when_it_cannot_be_read():
    net = tsnn.to_snntorch(small_cnn(channels=(2, 2), hidden=4, T=4))
    with pytest.raises(ConfigError, match="pass input_shape"):
        tnir.to_nir(net)
    with pytest.raises(ConfigError, match="does not fit"):
        tnir.to_nir(net, input_shape=(3, 5, 5))


# --- the CLI ------------------------------------------------------------------------------------


@pytest.fixture
def checkpoint(digits_checkpoint):
    return digits_checkpoint


def cli_json(capsys, *args):
    capsys.readouterr()
    assert main([*map(str, args), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("backend", list(ADAPTERS))
def test_cli_export_nir_then_evaluate_the_file(checkpoint, tmp_path, capsys, backend):
    path = tmp_path / "net.nir"
    assert main(["export", str(checkpoint), "--backend", "nir", "--out", str(path)]) == 0
    assert "from_nir" in capsys.readouterr().out
    from_file = cli_json(capsys, "evaluate", path, "--backend", backend)
    direct = cli_json(capsys, "evaluate", checkpoint, "--backend", backend)
    for key in ("accuracy", "samples", "spikes_per_sample", "time_steps", "per_layer"):
        assert from_file[key] == direct[key], key
    assert from_file["dataset"] == "digits"  # read from the file's metadata
    assert main(["evaluate", str(path), "--backend", backend]) == 0
    assert f"backend {backend}" in capsys.readouterr().out


def test_cli_nir_errors(checkpoint, tmp_path, capsys):
    path = tmp_path / "net.nir"
    path.write_bytes(b"keep me")
    assert main(["export", str(checkpoint), "--backend", "nir", "--out", str(path)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert path.read_bytes() == b"keep me"
    assert main(["export", str(checkpoint), "--backend", "nir", "--out", str(path),
                 "--overwrite"]) == 0
    assert main(["evaluate", str(path)]) == 2
    assert "--backend snntorch or --backend norse" in capsys.readouterr().err
    assert main(["evaluate", str(path), "--backend", "norse", "--dataset", "mnist-idx",
                 "--data-dir", str(tmp_path)]) == 2
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "absent.nir"), "--backend", "norse"]) == 2
    assert "no NIR file" in capsys.readouterr().err


# --- the frameworks' own NIR readers, as docs/nir.md describes them --------------------------


def test_docs_claims_about_snntorch_import_from_nir(good_file):
    """snnTorch 1.0 maps nir.IF to snn.Leaky(beta=0.9) without init_hidden: it imports but the
    graph cannot run (a neuron hands a (spk, mem) tuple to the next layer)."""
    import snntorch as snn
    from snntorch.import_nir import import_from_nir

    net = import_from_nir(nir.read(good_file))
    leaky = [m for m in net.modules() if isinstance(m, snn.Leaky)]
    assert len(leaky) == 3 and all(float(m.beta) == pytest.approx(0.9) for m in leaky)
    assert not any(m.init_hidden for m in leaky)
    with pytest.raises(AttributeError, match="tuple"):
        net(torch.rand(2, 1, 8, 8))
    assert "beta=0.9" in DOCS.read_text()


def test_docs_claims_about_norse_from_nir(good_file):
    """Norse 1.1 turns NIR's Flatten(start_dim=0) into torch's Flatten(0), which flattens the
    batch; with the one-line patch of docs/nir.md it runs as a rate-coded IF network."""
    import norse.torch as nt

    logging.disable(logging.WARNING)
    try:
        net = nt.from_nir(nir.read(good_file))
    finally:
        logging.disable(logging.NOTSET)
    flat = [m for m in net.modules() if isinstance(m, nn.Flatten)]
    assert [m.start_dim for m in flat] == [0]
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        net(x)
    text = DOCS.read_text()
    patch = re.search(r"```python\n(# patch.*?)```", text, re.S)
    assert patch, "docs/nir.md shows the Flatten patch as a '# patch' block"
    exec(patch.group(1), {"net": net, "nn": nn})
    out, state = net(x, None)
    assert out.shape == (2, 10)
    with pytest.raises(KeyError):  # no AvgPool2d in Norse's reader: a CNN file does not load
        cnn = tnir.to_nir(small_cnn(channels=(2, 2), hidden=4, T=4, pool="avg"))
        nt.from_nir(cnn)


def test_an_unknown_node_type_in_the_file(good_file):
    import h5py

    with h5py.File(good_file, "r+") as f:
        node = f["node"]["nodes"]["ttfs1"]
        del node["type"]
        node.create_dataset("type", data="Dendrite")
    with pytest.raises(tnir.NIRFormatError, match=r"node types \['Dendrite'\] that nir"):
        tnir.from_nir(good_file, "norse")


def test_the_three_lines_of_the_docs_run_verbatim(tmp_path, monkeypatch):
    """docs/nir.md's shell lines (through the CLI entry point) and its Python block."""
    text = DOCS.read_text()
    shell = re.search(r"```bash\n(.*?)```", text, re.S).group(1).strip().splitlines()
    python = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    for line in shell:
        assert line.startswith("ttfs ")
        assert main(line.split()[1:] + ["--quiet"] * line.startswith("ttfs train")) == 0
    namespace: dict = {}
    exec(python, namespace)
    assert isinstance(namespace["net"], nn.Module)
    x = torch.rand(3, 1, 8, 8, dtype=next(namespace["net"].parameters()).dtype)
    assert tnorse.simulate(namespace["net"], x).logits.shape == (3, 10)


def test_the_readme_nir_lines_run_verbatim(tmp_path, monkeypatch, capsys):
    readme = (DOCS.parents[1] / "README.md").read_text()
    section = readme.split("### Take it anywhere through NIR", 1)[1]
    lines = re.search(r"```bash\n(.*?)```", section, re.S).group(1).strip().splitlines()
    monkeypatch.chdir(tmp_path)
    for line in lines:
        if line.startswith("python -c "):
            exec(line[len("python -c "):].strip().strip('"'), {})
            assert "TTFSCell" in capsys.readouterr().out
        else:
            words = line.split("#")[0].split()
            assert words[0] == "ttfs"
            assert main(words[1:] + ["--quiet"] * (words[1] == "train")) == 0


def test_the_frameworks_own_exporters_on_a_ttfs_net():
    """snnTorch's export_to_nir is refused with a pointer to ttfs_plugin.nir; Norse's to_nir
    returns None nodes (docs/nir.md says both)."""
    import norse.torch as nt
    from snntorch.export_nir import export_to_nir

    model = case_model("mlp", torch.float32)[0]
    x = torch.rand(1, 1, 8, 8)
    with pytest.raises(export.ExportError, match="ttfs_plugin.nir.write"):
        export_to_nir(tsnn.to_snntorch(model), x)
    graph = nt.to_nir(tnorse.to_norse(model), x)
    assert any(node is None for node in graph.nodes.values())
    assert "export_to_nir" in DOCS.read_text() and "norse.torch.to_nir" in DOCS.read_text()
