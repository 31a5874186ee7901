"""Synaptic operations (spikes × fan-out, routed as the time-stepped network routes them), the
ReLU twin's MACs, and energy at per-operation costs."""

from __future__ import annotations

import json

import pytest
import torch
from test_snntorch import randomise_batch_norm

from ttfs_plugin import export
from ttfs_plugin.cli import main
from ttfs_plugin.errors import ConfigError
from ttfs_plugin.metrics import evaluate
from ttfs_plugin.models import mlp, small_cnn
from ttfs_plugin.synops import OperationCosts, layer_synops, operation_figures, relu_twin_macs


def conv_plan():
    stages = export.plan_network(small_cnn(channels=(4, 8), hidden=16, T=8).eval())
    return stages, layer_synops(stages)


def test_one_spike_reaches_its_fan_out_through_the_next_conv():
    _, count = conv_plan()
    spikes = torch.zeros(1, 1, 28, 28)
    spikes[0, 0, 14, 14] = 1  # the input layer feeds conv1: 3×3, padding 1, 4 channels
    assert count("input", spikes).item() == 4 * 9
    corner = torch.zeros(1, 1, 28, 28)
    corner[0, 0, 0, 0] = 1
    assert count("input", corner).item() == 4 * 4  # a corner reaches 2×2 outputs


def test_max_pooling_passes_one_spike_per_block():
    _, count = conv_plan()
    spikes = torch.zeros(1, 4, 28, 28)
    spikes[0, 0, 10, 10] = spikes[0, 0, 10, 11] = 1  # one 2×2 block of ttfs1 → one pooled spike
    assert count("ttfs1", spikes).item() == 8 * 9  # conv2: 8 channels, 3×3, inside the map


def test_linear_fan_out_and_the_relu_twins_macs():
    stages = export.plan_network(mlp(hidden=(32,), T=8).eval())
    count = layer_synops(stages)
    spikes = torch.zeros(2, 1, 8, 8)
    spikes[0].view(-1)[:5] = 1
    assert count("input", spikes).tolist() == [5 * 32, 0]
    assert relu_twin_macs(stages, (1, 8, 8)) == {"fc1": 64 * 32, "output": 32 * 10}
    stages, _ = conv_plan()
    assert relu_twin_macs(stages, (1, 28, 28)) == {
        "conv1": 4 * 28 * 28 * 9, "conv2": 8 * 14 * 14 * 4 * 9, "fc3": 8 * 7 * 7 * 16,
        "output": 16 * 10}


@pytest.mark.parametrize("pool", ["max", "avg"])
@pytest.mark.parametrize("backend", ["snntorch", "norse"])
def test_surrogate_and_simulation_count_the_same_operations(pool, backend):
    pytest.importorskip(backend)
    from ttfs_plugin.simulation import evaluate_backend

    torch.manual_seed(0)
    model = randomise_batch_norm(small_cnn(channels=(4, 8), hidden=16, T=8, pool=pool))
    model = model.double().eval()
    batch = [(torch.rand(6, 1, 28, 28, dtype=torch.float64), torch.zeros(6, dtype=torch.long))]
    surrogate, simulated = evaluate(model, batch), evaluate_backend(model, batch, backend)
    for key in ("synaptic_operations", "relu_twin_macs", "energy_pj"):
        assert surrogate[key] == simulated[key], key
    ops = surrogate["synaptic_operations"]
    assert ops["per_layer"]["input"] > 0 and ops["per_layer"]["ttfs1"] > 0
    assert ops["per_sample"] == pytest.approx(sum(ops["per_layer"].values()))
    assert ops["per_sample_without_input"] == pytest.approx(
        ops["per_sample"] - ops["per_layer"]["input"])


def test_a_users_exported_net_is_not_changed_by_counting():
    pytest.importorskip("snntorch")
    from ttfs_plugin import snntorch as tsnn
    from ttfs_plugin.simulation import evaluate_simulated

    net = tsnn.to_snntorch(small_cnn(channels=(2, 2), hidden=4, T=4).eval())
    before = {k: v.clone() for k, v in net.state_dict().items()}
    evaluate_simulated(net, [(torch.rand(2, 1, 28, 28), torch.zeros(2, dtype=torch.long))],
                       "snntorch")
    after = net.state_dict()
    assert all(after[k].dtype == v.dtype and torch.equal(after[k], v) for k, v in before.items())


def test_energy_at_configurable_costs_and_bad_costs():
    figures = operation_figures({"input": 100.0, "ttfs1": 50.0}, {"fc1": 1000}, "input",
                                "2,10")
    assert figures["energy_pj"]["snn"] == 150 * 2 and figures["energy_pj"]["relu_twin"] == 1e4
    assert figures["synaptic_operations"]["per_sample_without_input"] == 50
    assert OperationCosts() == OperationCosts(0.9, 4.6, OperationCosts().name)
    for bad in ("1", "a,b", "0,4.6", "nan,1"):
        with pytest.raises(ConfigError, match="operation costs"):
            OperationCosts.parse(bad)


def test_cli_reports_the_operations(digits_checkpoint, capsys):
    capsys.readouterr()
    assert main(["evaluate", str(digits_checkpoint), "--json", "--op-costs", "1,5"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["energy_pj"]["costs"]["ac_pj"] == 1.0
    assert result["energy_pj"]["snn"] == pytest.approx(result["synaptic_operations"]["per_sample"])
    assert main(["evaluate", str(digits_checkpoint), "--op-costs", "x"]) == 2
    assert "operation costs must be 'AC,MAC'" in capsys.readouterr().err
