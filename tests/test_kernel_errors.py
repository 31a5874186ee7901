"""Kernel errors of the paper's Eq. 10–13 (SPEC §11): closed-form values on a hand-built table,
region boundaries read from the table, agreement with the surrogate activation, and the
per-epoch ``kernel_errors`` entry of a training run."""

import json
import math

import pytest
import torch
from torch.utils.data import TensorDataset

from ttfs_plugin.errors import ConfigError
from ttfs_plugin.kernel import kernel_table, threshold_table
from ttfs_plugin.kernel_errors import (
    ERROR_KEYS,
    kernel_errors,
    max_precision_error,
    network_kernel_errors,
    network_mean,
    neuron_errors,
)
from ttfs_plugin.layers import TTFSActivation
from ttfs_plugin.models import mlp, small_cnn
from ttfs_plugin.training import TrainConfig, fit

E = math.e
THETA0 = 2.0
# kappa(k) = exp(-k) for k = 0 … 3 (tau = 1, td = 0); thr = theta0 * kappa: [2, 2/e, 2/e², 2/e³]
KAPPA = torch.tensor([1.0, E ** -1, E ** -2, E ** -3], dtype=torch.float64)
CEIL = THETA0 * KAPPA
# a table shifted by half a step, thr[k] = theta0 * kappa(k + 1/2) (the "round" quantizer)
ROUND = THETA0 * torch.exp(-(torch.arange(4, dtype=torch.float64) + 0.5))

# one value per case: clipped, on the clip level, quantised (t = 1), quantised (t = 3), pruned
# with z > 0, pruned with z < 0
Z = torch.tensor([3.0, 2.0, 1.0, 0.2, 0.05, -1.0], dtype=torch.float64)


def test_each_region_has_its_closed_form_error():
    e, t = neuron_errors(Z, CEIL, KAPPA, THETA0)
    assert t.tolist() == [0, 0, 1, 3, 4, 4]
    expected = [3 / 2 - 1,            # Eq. 10: z/theta0 - x_max
                0.0,                  # exactly on the clip level: fires at t = 0, no loss
                1 / 2 - E ** -1,      # Eq. 12: |z/theta0 - kappa(1)|
                0.2 / 2 - E ** -3,    # Eq. 12: |z/theta0 - kappa(3)|
                0.05 / 2,             # Eq. 11: relu(z)/theta0, nothing is sent
                0.0]                  # z <= 0: the ReLU it stands for is 0 as well
    torch.testing.assert_close(e, torch.tensor(expected, dtype=torch.float64))


def test_layer_figures_are_means_per_neuron_and_add_up():
    f = kernel_errors(Z, CEIL, KAPPA, THETA0)
    n = Z.numel()
    assert f["max_error"] == pytest.approx(0.5 / n)
    assert f["min_error"] == pytest.approx(0.025 / n)
    assert f["precision_error"] == pytest.approx((0.5 - E ** -1 + 0.1 - E ** -3) / n)
    assert f["total_error"] == pytest.approx(sum(f[k] for k in ERROR_KEYS))
    assert (f["clipped"], f["quantized"], f["pruned"]) == pytest.approx((2 / n, 2 / n, 2 / n))
    assert f["pruned_positive"] == pytest.approx(1 / n)
    assert f["max_precision_error"] == pytest.approx(1 - E ** -1)  # Eq. 13: kappa(0) - kappa(1)
    assert f["x_max"] == pytest.approx(1.0) and f["x_min"] == pytest.approx(E ** -3)
    assert f["range_length"] == pytest.approx(1 - E ** -3)
    assert f["clip_level"] == pytest.approx(2.0) and f["floor"] == pytest.approx(2 * E ** -3)


def test_regions_come_from_the_threshold_table():
    # z/theta0 = 0.95 lies between kappa(1/2) and kappa(0): quantised to t = 1 by the ceil table,
    # clipped to t = 0 by the round table — the same kernel, another table.
    z = torch.tensor([1.9], dtype=torch.float64)
    e_ceil, t_ceil = neuron_errors(z, CEIL, KAPPA, THETA0)
    e_round, t_round = neuron_errors(z, ROUND, KAPPA, THETA0)
    assert (t_ceil.item(), t_round.item()) == (1, 0)
    assert e_ceil.item() == pytest.approx(0.95 - E ** -1)
    assert e_round.item() == pytest.approx(1 - 0.95)
    f = kernel_errors(z, ROUND, KAPPA, THETA0)
    assert f["max_error"] == pytest.approx(0.05) and f["precision_error"] == 0.0
    # floor of the round table: theta0 * kappa(3.5) < theta0 * kappa(3)
    z = torch.tensor([THETA0 * E ** -3.2], dtype=torch.float64)
    assert neuron_errors(z, ROUND, KAPPA, THETA0)[1].item() == 3
    assert neuron_errors(z, CEIL, KAPPA, THETA0)[1].item() == 4
    assert kernel_errors(z, ROUND, KAPPA, THETA0)["floor"] == pytest.approx(THETA0 * E ** -3.5)


def test_max_precision_error_of_both_tables():
    assert max_precision_error(CEIL, KAPPA, THETA0) == pytest.approx(1 - E ** -1)
    # round: the cell of t = 1 reaches from kappa(1.5) up to kappa(0.5)
    assert max_precision_error(ROUND, KAPPA, THETA0) == pytest.approx(E ** -0.5 - E ** -1)
    tau, td = 3.0, 0.7
    kappa, thr = kernel_table(tau, td, 16), threshold_table(tau, td, 16, 1.5, "ceil")
    x_max = math.exp(td / tau)
    assert max_precision_error(thr, kappa, 1.5) == pytest.approx(x_max * (1 - math.exp(-1 / tau)),
                                                                 rel=1e-6)


def test_quantised_errors_stay_under_eq13_and_reach_it():
    tau, td, theta0, T = 4.0, 0.5, 1.5, 12
    kappa, thr = kernel_table(tau, td, T).double(), threshold_table(tau, td, T, theta0).double()
    bound = max_precision_error(thr, kappa, theta0)
    z = thr[-1] + (thr[0] - thr[-1]) * torch.rand(10_000, dtype=torch.float64)
    e, t = neuron_errors(z, thr, kappa, theta0)
    quantised = (t > 0) & (t < T)
    assert quantised.all()
    assert (e >= 0).all() and (e <= bound + 1e-12).all()
    just_below_clip = torch.nextafter(thr[:1], torch.tensor([-math.inf], dtype=torch.float64))
    assert neuron_errors(just_below_clip, thr, kappa, theta0)[0].item() == pytest.approx(bound)


def test_errors_match_the_surrogate_activation():
    neuron = TTFSActivation(T=8, tau=3.0, td=0.5, theta0=1.5).eval()
    z = torch.randn(64, 20) * 2
    with torch.no_grad():
        x = neuron(z)
    k = neuron.kernel
    e, t = neuron_errors(z, k.thresholds(), k.kernel(), k.theta0)
    assert torch.equal(t, neuron.spike_times(z))
    torch.testing.assert_close(e, (z.double().clamp_min(0) / 1.5 - x.double()).abs())


@pytest.mark.parametrize("call, message", [
    (lambda: kernel_errors(Z, CEIL.flip(0), KAPPA, THETA0), "non-increasing"),
    (lambda: kernel_errors(Z, CEIL, KAPPA[:3], THETA0), "one entry per time step"),
    (lambda: kernel_errors(Z, CEIL[:1], KAPPA[:1], THETA0), "T >= 2"),
    (lambda: kernel_errors(Z, CEIL, KAPPA, 0.0), "theta0"),
    (lambda: kernel_errors(Z, CEIL, KAPPA, math.nan), "theta0"),
    (lambda: kernel_errors(torch.tensor([1, 2]), CEIL, KAPPA, THETA0), "floating-point"),
    (lambda: kernel_errors(torch.zeros(0), CEIL, KAPPA, THETA0), "empty"),
    (lambda: kernel_errors(Z, CEIL.tolist(), KAPPA, THETA0), "tensors"),
])
def test_bad_input_is_a_clear_error(call, message):
    with pytest.raises(ConfigError, match=message):
        call()


def test_network_kernel_errors_per_spiking_layer():
    from ttfs_plugin.plot import preactivation_stats

    net = small_cnn(in_shape=(1, 12, 12), channels=(4, 8), hidden=16)
    x = torch.rand(8, 1, 12, 12)
    net.train()
    running = net.bn1.running_mean.clone()
    found = network_kernel_errors(net, x)
    assert net.training and torch.equal(net.bn1.running_mean, running)  # eval mode inside
    stats = preactivation_stats(net, x)
    assert list(found) == list(stats) == ["input", "ttfs1", "ttfs2", "ttfs3"]
    for name, f in found.items():
        assert f["samples"] == 8
        assert f["neurons"] == stats[name]["z"].numel() // 8
        assert f["pruned"] == pytest.approx(stats[name]["pruned"])
        assert f["floor"] == pytest.approx(stats[name]["floor"])
        assert f["total_error"] == pytest.approx(sum(f[k] for k in ERROR_KEYS))
        assert f["total_error"] > 0
    with pytest.raises(ConfigError, match="ReLU"):
        network_kernel_errors(mlp(hidden=(8,), activation="relu"), torch.rand(2, 1, 8, 8))


def test_network_mean_leaves_missing_values_out():
    per_layer = {"a": {"total_error": 1.0}, "b": {"total_error": 3.0}, "c": {"total_error": None},
                 "d": {}}
    assert network_mean(per_layer) == 2.0
    assert math.isnan(network_mean({"a": {}}))


# --------------------------------------------------------------------------- in training

def tiny_data(n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,),
                                                                            generator=g))


def test_fit_records_kernel_errors_of_the_first_validation_samples():
    torch.manual_seed(0)
    net = mlp(hidden=(16,))
    val = tiny_data(40, seed=1)
    history = fit(net, tiny_data(), val, TrainConfig(epochs=2, batch_size=16), progress=False,
                  kernel_error_samples=24)
    assert all("kernel_errors" in r for r in history)
    last = history[-1]["kernel_errors"]
    assert list(last) == list(history[-1]["kernels"]) == ["input", "ttfs1"]
    assert {r["samples"] for r in last.values()} == {24}
    # the record is what the trained network gives on those samples
    again = network_kernel_errors(net, val.tensors[0][:24])
    for name, figures in again.items():
        assert last[name] == pytest.approx(figures)
    assert history[0]["kernel_errors"] != history[1]["kernel_errors"]  # the weights moved


def test_fit_without_kernel_errors():
    torch.manual_seed(0)
    cfg = TrainConfig(epochs=1, batch_size=16)
    history = fit(mlp(hidden=(8,)), tiny_data(), tiny_data(16), cfg, progress=False,
                  kernel_error_samples=0)
    assert "kernel_errors" not in history[0]
    relu = fit(mlp(hidden=(8,), activation="relu"), tiny_data(), tiny_data(16), cfg,
               progress=False)
    assert "kernel_errors" not in relu[0]
    no_val = fit(mlp(hidden=(8,)), tiny_data(), None, cfg, progress=False)
    assert "kernel_errors" not in no_val[0]
    with pytest.raises(ConfigError, match="kernel_error_samples"):
        fit(mlp(hidden=(8,)), tiny_data(), None, cfg, progress=False, kernel_error_samples=-1)


def test_run_folder_keeps_kernel_errors_in_metrics_json_and_checkpoint(tmp_path):
    from ttfs_plugin.cli import main

    out = tmp_path / "run"
    assert main(["train", "--epochs", "2", "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["format"] == "ttfs-plugin/run-metrics"
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    for saved, kept in zip(metrics["history"], ckpt["history"]):
        assert saved["kernel_errors"] == kept["kernel_errors"]  # JSON keeps every float
        assert set(saved["kernel_errors"]) == set(saved["kernels"])
        for figures in saved["kernel_errors"].values():
            assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in figures.values())
    header = (out / "metrics.csv").read_text().splitlines()[0]
    assert "kernel_errors" not in header  # per-layer dicts stay out of the CSV
