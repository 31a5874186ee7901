"""The one-way export walk itself, for both backends: plan → build → save → load."""

from __future__ import annotations

import pytest
import torch
from torch import nn

pytest.importorskip("snntorch")
pytest.importorskip("norse")

from ttfs_plugin import export  # noqa: E402
from ttfs_plugin import norse as tnorse  # noqa: E402
from ttfs_plugin import snntorch as tsnn  # noqa: E402
from ttfs_plugin.errors import CheckpointError  # noqa: E402
from ttfs_plugin.models import small_cnn  # noqa: E402

ADAPTERS = {"snntorch": tsnn, "norse": tnorse}


def model():
    torch.manual_seed(0)
    return small_cnn(channels=(4, 8), hidden=16, T=8).eval()


def simulate(adapter, net, x):
    with torch.no_grad():
        return adapter.simulate(net, x)


def test_plan_kinds_and_names():
    stages = export.plan_network(model())
    kinds = [st.kind for st in stages]
    assert kinds[0] == "neuron" and kinds[-1] == "readout"
    assert set(kinds) == {"neuron", "synapse", "maxpool", "readout"}
    assert len({st.name for st in stages}) == len(stages)
    neurons = [st for st in stages if st.kind == "neuron"]
    synapses = [st for st in stages if st.kind == "synapse"]
    for syn in synapses:  # each synapse carries its source layer's own kernel object
        assert syn.kernel is neurons[syn.source].kernel
    spiking = export.plan_network(model(), output="spikes")
    assert spiking[-1].kind == "neuron" and spiking[-1].output
    assert spiking[-1].index == neurons[-1].index + 1


@pytest.mark.parametrize("kind", list(export.STAGE_KINDS))
def test_every_stage_kind_round_trips_through_its_dict(kind):
    stages = export.plan_network(model(), output="spikes", input_mode="spikes")
    kernels = {}
    for st in stages:
        again = export.STAGE_KINDS[st.kind].from_dict(st.to_dict(), kernels)
        assert again.to_dict() == st.to_dict()


@pytest.mark.parametrize("backend", list(ADAPTERS))
@pytest.mark.parametrize("output", export.OUTPUT_MODES)
def test_build_save_load_is_the_same_network(tmp_path, backend, output):
    adapter = ADAPTERS[backend]
    net = export.convert(model(), adapter.BACKEND, output=output)
    assert not hasattr(net, "_ttfs_spec")  # stages come from the modules themselves
    assert [st.to_dict() for st in export.stages_of(net)] == [
        st.to_dict() for st in export.plan_network(model(), output=output)]
    path = tmp_path / "net.pt"
    adapter.save(net, path)
    again = adapter.load(path)
    x = torch.rand(3, 1, 28, 28)
    a, b = simulate(adapter, net, x), simulate(adapter, again, x)
    assert torch.equal(a.logits, b.logits)
    assert all(torch.equal(a.spike_times[n], b.spike_times[n]) for n in a.spike_times)


@pytest.mark.parametrize("backend", list(ADAPTERS))
def test_a_fine_tuned_net_saves_what_it_holds_now(tmp_path, backend):
    adapter = ADAPTERS[backend]
    net = export.convert(model(), adapter.BACKEND)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(1.1)
    adapter.save(net, tmp_path / "tuned.pt")
    again = adapter.load(tmp_path / "tuned.pt")
    for (n1, p1), (n2, p2) in zip(net.state_dict().items(), again.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2)


def test_files_of_the_other_backend_or_an_old_version_are_refused(tmp_path):
    tsnn.save(tsnn.to_snntorch(model()), tmp_path / "snn.pt")
    with pytest.raises(CheckpointError, match="exported for 'snntorch'"):
        tnorse.load(tmp_path / "snn.pt")
    data = torch.load(tmp_path / "snn.pt", weights_only=True)
    data["version"] = 1
    torch.save(data, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match="version 1"):
        tsnn.load(tmp_path / "old.pt")
    data["version"] = export.EXPORT_VERSION
    data["stages"][0]["kind"] = "mystery"
    torch.save(data, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="not a valid exported-network description"):
        tsnn.load(tmp_path / "bad.pt")


def test_a_backend_without_a_factory_is_a_clear_error():
    partial = export.Backend("partial", {"neuron": lambda st, **_: nn.Identity()},
                             container=lambda mods: nn.Sequential())
    with pytest.raises(export.ExportError, match="synapse"):
        export.build(export.plan_network(model()), partial)


def test_a_neuron_holding_a_norm_cannot_be_saved_silently(tmp_path):
    from ttfs_plugin.layers import TBBatchNorm1d

    n0 = tsnn.TTFSNeuron(0, T=4, init_hidden=True, norm=TBBatchNorm1d(3))
    with pytest.raises(export.ExportError, match="norm"):
        tsnn.save(nn.Sequential(n0), tmp_path / "x.pt")
