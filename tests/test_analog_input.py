"""``input_mode="analog"`` (SPEC §8): the image itself into the first weight op, no input
spikes, the same windows; spike totals with and without the input layer everywhere."""

import json

import pytest
import torch
from _model_helpers import randomise_batch_norm

from ttfs_plugin.errors import ConfigError, InputShapeError
from ttfs_plugin.export import ExportError, plan_network
from ttfs_plugin.layers import AnalogInput
from ttfs_plugin.metrics import evaluate
from ttfs_plugin.models import mlp, small_cnn, vgg16
from ttfs_plugin.simulation import agreement, evaluate_backend, surrogate_spike_times

CASES = {
    "mlp": (lambda **kw: mlp(**kw), (32, 1, 8, 8)),
    "cnn-max": (lambda **kw: small_cnn(channels=(4, 8), hidden=16, **kw), (8, 1, 28, 28)),
    "vgg16-narrow": (lambda **kw: vgg16(width=1 / 16, **kw), (4, 3, 32, 32)),
}


def test_the_surrogate_feeds_the_image_itself_into_the_first_weight_op():
    torch.manual_seed(0)
    analog = mlp(input_mode="analog").eval()
    x = torch.rand(5, 1, 8, 8)
    assert isinstance(analog.input, AnalogInput)
    hidden = analog.bn1(analog.fc1(analog.flatten(x)))
    z = {}
    analog.ttfs1.register_forward_hook(lambda m, i, o: z.setdefault("z", i[0]))
    analog(x)
    assert torch.equal(z["z"], hidden)  # W·x, not W·decode(encode(x))
    names = [n for n, _ in analog.spiking_layers()]
    assert names == ["ttfs1", "ttfs2"]  # the input is not a spiking layer
    with pytest.raises(InputShapeError, match=r"\[0, 1\]"):
        analog(x * 3)
    with pytest.raises(ConfigError, match="unknown input_mode 'spikes'"):
        mlp(input_mode="spikes")


@pytest.mark.parametrize("backend", ["snntorch", "norse"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", list(CASES))
def test_simulation_equals_the_surrogate(case, dtype, backend):
    adapter = pytest.importorskip(f"ttfs_plugin.{backend}")
    build, shape = CASES[case]
    torch.manual_seed(0)
    model = randomise_batch_norm(build(input_mode="analog")).to(dtype)
    x = torch.rand(*shape, dtype=dtype)
    logits, times = surrogate_spike_times(model, x)
    net = getattr(adapter, f"to_{backend}")(model)
    result = adapter.simulate(net, x)
    assert list(result.spike_times) == list(times)  # no input layer among the spiking layers
    # the windows are an encoding network's: (L+1)·T with the input's slot kept
    encoding = build()
    assert result.steps == adapter.num_steps(getattr(adapter, f"to_{backend}")(encoding))
    scores = agreement(result, logits, times)
    if dtype == torch.float64:
        assert scores == {"agreement_with_surrogate": 1.0, "spike_time_agreement": 1.0}
        torch.testing.assert_close(result.logits, logits, atol=1e-9, rtol=0)
    else:
        assert scores["spike_time_agreement"] >= 0.9999


def test_an_analog_network_has_no_input_spike_train():
    tsnn = pytest.importorskip("ttfs_plugin.snntorch")
    model = randomise_batch_norm(mlp(input_mode="analog"))
    with pytest.raises(ExportError, match="analog image"):
        plan_network(model, input_mode="spikes")
    with pytest.raises(InputShapeError, match="analog image"):
        tsnn.input_spike_train(torch.rand(2, 1, 8, 8), tsnn.to_snntorch(model))


def loader(n=48, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=gen)
    y = torch.randint(0, 10, (n,), generator=gen)
    return [(x[i:i + 16], y[i:i + 16]) for i in range(0, n, 16)]


@pytest.mark.parametrize("input_mode", ["encode", "analog"])
def test_totals_with_and_without_the_input_layer_agree_across_surrogate_and_simulators(
        input_mode):
    pytest.importorskip("ttfs_plugin.snntorch")
    pytest.importorskip("ttfs_plugin.norse")
    torch.manual_seed(0)
    model = randomise_batch_norm(mlp(input_mode=input_mode)).double()
    data = [(x.double(), y) for x, y in loader()]
    surrogate = evaluate(model, data)
    per_layer = {layer["name"]: layer for layer in surrogate["per_layer"]}
    hidden = sum(v["spikes_per_sample"] for n, v in per_layer.items() if n != "input")
    assert surrogate["without_input"]["spikes_per_sample"] == pytest.approx(hidden)
    if input_mode == "encode":
        assert per_layer["input"]["input"] is True
        assert surrogate["spikes_per_sample"] == pytest.approx(
            hidden + per_layer["input"]["spikes_per_sample"])
        assert surrogate["without_input"]["neurons"] == surrogate["neurons"] - 64
        assert surrogate["synaptic_operations"]["analog_input_macs"] == 0
    else:
        assert "input" not in per_layer
        assert surrogate["without_input"]["spikes_per_sample"] == surrogate["spikes_per_sample"]
        assert surrogate["synaptic_operations"]["analog_input_macs"] == 64 * 256
        # the first weight op multiplies real values: its MACs are in the SNN's energy
        ops = surrogate["synaptic_operations"]["per_sample"]
        assert surrogate["energy_pj"]["snn"] == pytest.approx(ops * 0.9 + 64 * 256 * 4.6)
    assert surrogate["time_steps"] == 4 * model.config.T  # input slot, 2 hidden, readout
    for backend in ("snntorch", "norse"):
        simulated = evaluate_backend(model, data, backend)
        for key in ("spikes_per_sample", "neurons", "time_steps"):
            assert simulated[key] == pytest.approx(surrogate[key]), (backend, key)
        for block, key in (("without_input", "spikes_per_sample"), ("without_input", "neurons"),
                           ("synaptic_operations", "per_sample"),
                           ("synaptic_operations", "analog_input_macs"),
                           ("energy_pj", "snn")):
            assert simulated[block][key] == pytest.approx(surrogate[block][key]), (backend,
                                                                                  block, key)


def test_the_cli_trains_reports_and_exports_an_analog_network(tmp_path, capsys):
    pytest.importorskip("sklearn")
    tnir = pytest.importorskip("ttfs_plugin.nir")
    from ttfs_plugin.checkpoint import load_checkpoint
    from ttfs_plugin.cli import main

    out = tmp_path / "run"
    assert main(["train", "--dataset", "digits", "--epochs", "1", "--input-mode", "analog",
                 "--out", str(out), "--quiet"]) == 0
    network, ckpt = load_checkpoint(out)
    assert network.config.input_mode == "analog" and isinstance(network.input, AnalogInput)
    capsys.readouterr()
    assert main(["evaluate", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["without_input"]["spikes_per_sample"] == report["spikes_per_sample"]
    assert all(not layer["input"] for layer in report["per_layer"])
    assert main(["export", str(out / "checkpoint.pt"), "--backend", "nir",
                 "--out", str(tmp_path / "net.nir")]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "net.nir"), "--backend", "norse", "--json"]) == 0
    from_file = json.loads(capsys.readouterr().out)
    assert from_file["accuracy"] == report["accuracy"]
    assert from_file["spikes_per_sample"] == pytest.approx(report["spikes_per_sample"])
    relays = [n for n in tnir.read(tmp_path / "net.nir").nodes.values()
              if (n.metadata or {}).get("ttfs.relay")]
    assert len(relays) == 1


def test_freezing_the_input_kernel_skips_the_first_op_s_input_gradient():
    from ttfs_plugin.models import NetworkConfig  # noqa: F401  (config field under test)

    torch.manual_seed(0)
    net = small_cnn(channels=(4, 8), hidden=16, freeze_input_kernel=True)
    x = torch.rand(4, 1, 28, 28)
    encoded = net.input(x)
    assert not encoded.requires_grad  # so conv1 computes no input gradient
    net(x).sum().backward()
    assert net.input.kernel.tau.grad is None and net.input.kernel.td.grad is None
    assert net.ttfs1.kernel.tau.grad is not None and net.conv1.weight.grad is not None
    trainable = small_cnn(channels=(4, 8), hidden=16)
    assert trainable.input(x).requires_grad
    with pytest.raises(ConfigError, match="contradict"):
        mlp(input_mode="analog", freeze_input_kernel=True)


def test_a_frozen_input_kernel_stays_at_its_initial_values_through_training(tmp_path, capsys):
    pytest.importorskip("sklearn")
    from ttfs_plugin.checkpoint import load_checkpoint
    from ttfs_plugin.cli import main

    out = tmp_path / "run"
    assert main(["train", "--dataset", "digits", "--epochs", "1", "--reg-start", "0",
                 "--lambda-tr", "1e-2", "--freeze-input-kernel", "--out", str(out),
                 "--quiet"]) == 0
    network, _ = load_checkpoint(out)
    enc = network.input.kernel
    assert not enc.tau.requires_grad
    assert enc.tau.item() == enc.tau0.item() and enc.td.item() == enc.td0.item()
    assert network.ttfs1.kernel.tau.item() != network.ttfs1.kernel.tau0.item()
    capsys.readouterr()
    assert main(["train", "--dataset", "digits", "--epochs", "1", "--activation", "relu",
                 "--freeze-input-kernel", "--out", str(tmp_path / "relu")]) == 2
    assert "relu has no kernel" in capsys.readouterr().err


def test_analog_networks_in_the_frameworks_own_idioms():
    """A snnTorch user's hand-written loop with ``snntorch.utils.reset`` between batches, and a
    Norse user's loop over ``SequentialState`` with ``state=None``: the surrogate's logits."""
    pytest.importorskip("snntorch")
    pytest.importorskip("norse")
    import snntorch.utils

    from ttfs_plugin import norse as tnorse
    from ttfs_plugin import snntorch as tsnn

    torch.manual_seed(0)
    model = randomise_batch_norm(mlp(input_mode="analog")).double()
    batches = [torch.rand(6, 1, 8, 8, dtype=torch.float64, generator=torch.Generator()
                          .manual_seed(s)) for s in (1, 2)]
    expected = [model(x).detach() for x in batches]

    net = tsnn.to_snntorch(model)
    steps = tsnn.num_steps(net)
    for x, want in zip(batches, expected):
        out = None
        for step in range(steps):
            out = net(x if step == 0 else torch.zeros_like(x))
        torch.testing.assert_close(out, want, atol=1e-9, rtol=0)
        snntorch.utils.reset(net)

    cells = tnorse.to_norse(model)
    for x, want in zip(batches, expected):
        state = None
        for step in range(tnorse.num_steps(cells)):
            out, state = cells(x if step == 0 else torch.zeros_like(x), state)
        torch.testing.assert_close(out, want, atol=1e-9, rtol=0)
    with pytest.raises(InputShapeError, match=r"\[0, 1\]"):
        net(batches[0] * 3)  # the relay checks its input as the encoder does
