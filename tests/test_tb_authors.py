"""The authors' TB term (``tb_mode="authors"``, their ``bnonn`` loss, SPEC §7) against a closed
form written out here, its gradients, and the weighting option."""

from __future__ import annotations

import math

import pytest
import torch

from ttfs_plugin.cli import main
from ttfs_plugin.errors import ConfigError
from ttfs_plugin.models import mlp, small_cnn
from ttfs_plugin.training.losses import spike_proxy_loss


def their_q(gamma: float, beta: float, x_T: float) -> float:
    """``q_c`` of their code, term by term (SPEC §7)."""
    return (0.5 * (gamma**2 / 3 + gamma + 1) * beta**3 - 0.5 * x_T * beta**2
            - 0.5 * (x_T**2 * gamma + 2) * beta - x_T * (x_T**2 * gamma**2 + 6) / 6)


def tb_net(seed=0):
    torch.manual_seed(seed)
    net = small_cnn(channels=(3, 4), hidden=5, T=8).double()
    with torch.no_grad():
        kernels = [m for n, m in net.named_modules() if n.endswith("kernel")]
        for i, k in enumerate(kernels):
            k.tau.fill_(5.0 + i)
            k.td.fill_(0.3 * i)
        for m in net.modules():
            if hasattr(m, "expected_spikes"):
                m.weight.copy_(torch.rand(m.num_features, dtype=torch.float64) * 2 - 0.5)
                m.bias.copy_(torch.rand(m.num_features, dtype=torch.float64) - 0.5)
    net(torch.rand(2, 1, 28, 28, dtype=torch.float64))  # positions per channel
    return net


def closed_form(net, per_neuron=False):
    total = 0.0
    pairs = list(net.children())
    for i, module in enumerate(pairs):
        if not hasattr(module, "expected_spikes"):
            continue
        neuron = pairs[i + 1]
        tau, td, T = neuron.kernel.tau.item(), neuron.kernel.td.item(), neuron.kernel.T
        x_T = math.exp(-(T - td) / tau)
        layer = -sum(their_q(g, b, x_T) for g, b in zip(module.weight.tolist(),
                                                      module.bias.tolist()))
        total += layer * (module.positions if per_neuron else 1)
    return total


def test_the_authors_term_equals_their_closed_form():
    net = tb_net()
    assert spike_proxy_loss(net, "authors").item() == pytest.approx(closed_form(net), rel=1e-12)
    assert spike_proxy_loss(net, "authors", "neuron").item() == pytest.approx(
        closed_form(net, per_neuron=True), rel=1e-12)
    exact_neuron = spike_proxy_loss(net, "exact").item()
    assert spike_proxy_loss(net, "exact", "auto").item() == exact_neuron
    assert spike_proxy_loss(net, "exact", "channel").item() < exact_neuron


def test_signed_gamma_and_the_gradient_reaches_the_kernel():
    net = tb_net()
    before = spike_proxy_loss(net, "authors").item()
    with torch.no_grad():
        net.bn1.weight.neg_()
    assert spike_proxy_loss(net, "authors").item() != pytest.approx(before)  # gamma is signed
    loss = spike_proxy_loss(net, "authors")
    loss.backward()
    assert net.ttfs1.kernel.tau.grad is not None and net.ttfs1.kernel.tau.grad.abs() > 0
    assert net.ttfs1.kernel.td.grad.abs() > 0
    exact = tb_net()
    spike_proxy_loss(exact, "exact").backward()
    assert exact.ttfs1.kernel.tau.grad is None  # x_min is detached there (SPEC §7)


def test_bad_weighting_and_the_cli(tmp_path, capsys):
    with pytest.raises(ConfigError, match="unknown TB weighting 'sideways'"):
        spike_proxy_loss(tb_net(), "authors", "sideways")
    small = mlp(hidden=(8,))
    small(torch.rand(2, 1, 8, 8))
    assert spike_proxy_loss(small, "authors").item() != 0  # the TB batch norm of fc1
    assert main(["train", "--epochs", "1", "--tb-mode", "authors", "--lambda-tb", "1e-3",
                 "--reg-start", "0", "--out", str(tmp_path / "r"), "--quiet"]) == 0


def test_the_tb_modes_table_runs(digits_checkpoint, capsys):
    from benchmarks import tb_modes

    assert tb_modes.main(["--checkpoint", str(digits_checkpoint)]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert len(rows) == 3 and "VGG-16" in rows[1] and str(digits_checkpoint) in rows[2]
