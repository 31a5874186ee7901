"""TB batch norm, the network-wide losses of Eq. 9 and the efficiency figures (SPEC §6–7, §9).

Expected values are computed by hand with Python ``math`` from the parameters of the network.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ttfs_plugin import metrics
from ttfs_plugin.errors import ConfigError
from ttfs_plugin.layers import TBBatchNorm1d, TBBatchNorm2d, TemporalKernel
from ttfs_plugin.models import mlp, small_cnn
from ttfs_plugin.training import losses


def phi_cdf(a):
    return 0.5 * (1.0 + math.erf(a / math.sqrt(2.0)))


def phi_pdf(a):
    return math.exp(-a * a / 2) / math.sqrt(2 * math.pi)


def taylor_p(a):
    a = max(-math.sqrt(2.0), min(math.sqrt(2.0), a))
    return 1.0 - (0.5 + (a - a**3 / 6.0) / math.sqrt(2.0 * math.pi))


def exact_p(a):
    return 1.0 - phi_cdf(a)


def floor_of(neuron):
    """The firing floor ``thr[T-1]`` of a TTFS neuron, by hand from its kernel parameters:
    ``theta0 * kappa(T - 1)`` (ceil) or ``theta0 * kappa(T - 1/2)`` (round; SPEC §3)."""
    tau, td, T = neuron.kernel.tau.item(), neuron.kernel.td.item(), neuron.T
    shift = {"ceil": 0.0, "round": 0.5}[neuron.kernel.quantizer]
    return neuron.theta0 * math.exp(-(T - 1 + shift - td) / tau)


# --------------------------------------------------------------------------- TB batch norm


def test_tbbatchnorm2d_positions():
    bn = TBBatchNorm2d(3)
    assert bn.positions is None
    with pytest.raises(ConfigError):
        bn.expected_spikes(torch.tensor(0.1))
    bn(torch.randn(2, 3, 5, 7))
    assert bn.positions == 35
    bn(torch.randn(4, 3, 6, 6))
    assert bn.positions == 36


def test_tbbatchnorm1d_positions():
    bn = TBBatchNorm1d(4)
    with pytest.raises(ConfigError):
        bn.expected_spikes(torch.tensor(0.1))
    bn(torch.randn(6, 4))
    assert bn.positions == 1
    bn(torch.randn(6, 4, 9))
    assert bn.positions == 9


def test_tbbatchnorm_forward_is_batchnorm():
    torch.manual_seed(0)
    x = torch.randn(8, 3, 4, 4)
    ours, ref = TBBatchNorm2d(3), nn.BatchNorm2d(3)
    with torch.no_grad():
        for m in (ours, ref):
            m.weight.copy_(torch.tensor([0.5, -1.0, 2.0]))
            m.bias.copy_(torch.tensor([0.1, 0.0, -0.3]))
    assert torch.allclose(ours(x), ref(x))


@pytest.mark.parametrize("mode,pfun", [("exact", exact_p), ("taylor", taylor_p)])
def test_tbbatchnorm_expected_spikes_by_hand(mode, pfun):
    bn = TBBatchNorm2d(3)
    gamma, beta, floor = [0.5, -1.0, 2.0], [0.1, 0.0, -0.3], 0.2
    with torch.no_grad():
        bn.weight.copy_(torch.tensor(gamma))
        bn.bias.copy_(torch.tensor(beta))
    bn(torch.randn(2, 3, 4, 5))
    s = bn.expected_spikes(torch.tensor(floor), mode)
    expected = 20 * sum(pfun((floor - b) / abs(g)) for g, b in zip(gamma, beta))
    assert s.item() == pytest.approx(expected, rel=1e-5)


def test_tbbatchnorm_needs_affine():
    bn = TBBatchNorm1d(3, affine=False)
    bn(torch.randn(4, 3))
    with pytest.raises(ConfigError):
        bn.expected_spikes(torch.tensor(0.1))


# --------------------------------------------------------------------------- L_TB and L_TR


def _cnn():
    torch.manual_seed(0)
    net = small_cnn(in_shape=(1, 12, 12), channels=(4, 8), hidden=16)
    # distinct kernels per layer (so each bn must be paired with its own neuron) and
    # distinct gamma/beta, including negative gamma
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for i, (_name, m) in enumerate(net.named_modules()):
            if isinstance(m, TemporalKernel):
                m.tau.copy_(torch.tensor(6.0 + 1.7 * i))
                m.td.copy_(torch.tensor(-0.8 + 0.45 * i))
            if isinstance(m, (TBBatchNorm1d, TBBatchNorm2d)):
                m.weight.copy_(torch.randn(m.num_features, generator=gen) * 0.8)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.3)
                m.weight[0] = -abs(m.weight[0])
    net(torch.rand(3, 1, 12, 12))
    return net


def child(net, name):
    """The layer called ``name`` (``bn1``, ``ttfs1``, ``output`` …) wherever it is nested."""
    matches = [m for n, m in net.named_modules() if n.split(".")[-1] == name]
    assert len(matches) == 1, name
    return matches[0]


def _pairs(net):
    layers = {n: child(net, n) for n in ("bn1", "ttfs1", "bn2", "ttfs2", "bn3", "ttfs3")}
    return [(layers["bn1"], layers["ttfs1"]), (layers["bn2"], layers["ttfs2"]),
            (layers["bn3"], layers["ttfs3"])]


def hand_tb(net, pfun):
    total = 0.0
    for bn, neuron in _pairs(net):
        floor = floor_of(neuron)
        total += bn.positions * sum(pfun((floor - b) / abs(g))
                                    for g, b in zip(bn.weight.tolist(), bn.bias.tolist()))
    return total


def test_small_cnn_positions():
    net = _cnn()
    assert [bn.positions for bn, _ in _pairs(net)] == [144, 36, 1]


@pytest.mark.parametrize("mode,pfun", [("exact", exact_p), ("taylor", taylor_p)])
def test_spike_proxy_loss_by_hand(mode, pfun):
    net = _cnn()
    floors = [floor_of(n) for _, n in _pairs(net)]
    assert len(set(round(f, 6) for f in floors)) == 3  # the layers really differ
    loss = losses.spike_proxy_loss(net, mode)
    assert loss.dim() == 0
    assert loss.item() == pytest.approx(hand_tb(net, pfun), rel=1e-5)


def test_spike_proxy_loss_default_mode_is_exact():
    net = _cnn()
    assert losses.spike_proxy_loss(net).item() == pytest.approx(hand_tb(net, exact_p), rel=1e-5)


def test_spike_proxy_loss_before_forward_raises():
    net = small_cnn(in_shape=(1, 12, 12), channels=(4, 8), hidden=16)
    with pytest.raises(ConfigError):
        losses.spike_proxy_loss(net)


def test_spike_proxy_loss_unknown_mode_raises():
    with pytest.raises(ConfigError):
        losses.spike_proxy_loss(_cnn(), "approx")


def test_spike_proxy_loss_gradient_reaches_bn_not_kernel():
    net = _cnn()
    net.zero_grad(set_to_none=True)
    losses.spike_proxy_loss(net, "exact").backward()
    for bn, neuron in _pairs(net):
        floor = floor_of(neuron)
        assert bn.weight.grad is not None and bn.bias.grad is not None
        for c, (g, b) in enumerate(zip(bn.weight.tolist(), bn.bias.tolist())):
            a = (floor - b) / abs(g)
            # d/dbeta [n * (1 - Phi(a))] = n * pdf(a) / |gamma|
            assert bn.bias.grad[c].item() == pytest.approx(
                bn.positions * phi_pdf(a) / abs(g), rel=1e-4, abs=1e-9)
            assert bn.weight.grad[c].item() == pytest.approx(
                bn.positions * phi_pdf(a) * a / abs(g) * math.copysign(1.0, g),
                rel=1e-4, abs=1e-9)
    for m in net.modules():
        if isinstance(m, TemporalKernel):
            assert m.tau.grad is None or m.tau.grad.abs().item() == 0.0
            assert m.td.grad is None or m.td.grad.abs().item() == 0.0
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            assert m.weight.grad is None or m.weight.grad.abs().sum().item() == 0.0


def test_kernel_regularisation_loss_by_hand():
    net = small_cnn(in_shape=(1, 12, 12), channels=(4, 8), hidden=16, tau0=9.0, td0=0.5)
    kernels = [m for m in net.modules() if isinstance(m, TemporalKernel)]
    assert len(kernels) == 4  # input encoder + 3 hidden
    assert losses.kernel_regularisation_loss(net).item() == pytest.approx(0.0, abs=1e-12)
    with torch.no_grad():
        for i, k in enumerate(kernels):
            k.tau.add_(0.3 * (i + 1))
            k.td.sub_(0.2 * (i + 2))
    expected = sum((0.3 * (i + 1)) ** 2 + (0.2 * (i + 2)) ** 2 for i in range(4))
    expected_direct = sum((k.tau.item() - 9.0) ** 2 + (k.td.item() - 0.5) ** 2 for k in kernels)
    loss = losses.kernel_regularisation_loss(net)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert loss.item() == pytest.approx(expected_direct, rel=1e-5)
    loss.backward()
    for k in kernels:
        assert k.tau.grad.item() == pytest.approx(2 * (k.tau.item() - 9.0), rel=1e-5)
        assert k.td.grad.item() == pytest.approx(2 * (k.td.item() - 0.5), rel=1e-5)


def test_kernel_regularisation_loss_stacks_the_kernels_and_still_calls_other_regularisers():
    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.tensor(2.0))

        def regularisation(self):
            return self.w ** 2

    net = nn.Sequential(small_cnn(in_shape=(1, 12, 12), channels=(4, 8), hidden=16), Custom())
    with torch.no_grad():
        for i, k in enumerate(m for m in net.modules() if isinstance(m, TemporalKernel)):
            k.tau.add_(0.1 * i)
            k.td.sub_(0.3)
    per_module = sum(m.regularisation() for m in net.modules() if hasattr(m, "regularisation"))
    loss = losses.kernel_regularisation_loss(net)
    torch.testing.assert_close(loss, per_module)
    loss.backward()
    assert net[1].w.grad.item() == 4.0
    # kernels of another dtype than the rest are not stacked with them, and still counted
    net[0].ttfs1.kernel.double()
    torch.testing.assert_close(losses.kernel_regularisation_loss(net).double(),
                               per_module.detach().double())


def test_total_loss_without_parts_is_the_same_loss():
    net = _cnn()
    x, y = torch.rand(4, 1, 12, 12), torch.tensor([0, 1, 2, 3])
    kwargs = dict(lambda_w=1e-3, lambda_tr=0.1, lambda_tb=1e-3)
    logits = net(x)
    loss, parts = losses.total_loss(logits, y, net, **kwargs)
    quiet, none = losses.total_loss(logits, y, net, with_parts=False, **kwargs)
    assert torch.equal(quiet, loss) and none == {} and set(parts) == {"ce", "l2", "tr", "tb"}


def test_kernel_regularisation_loss_without_kernels_is_zero():
    assert losses.kernel_regularisation_loss(nn.Linear(3, 2)).item() == 0.0
    assert losses.spike_proxy_loss(nn.Linear(3, 2)).item() == 0.0


@pytest.mark.parametrize("lambdas", [(1e-2, 0.5, 0.03), (0.0, 0.0, 0.0), (1e-4, 0.0, 1e-3)])
def test_total_loss_by_hand(lambdas):
    lambda_w, lambda_tr, lambda_tb = lambdas
    net = _cnn()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, TemporalKernel):
                m.tau.add_(0.25)
    torch.manual_seed(3)
    x = torch.rand(5, 1, 12, 12)
    y = torch.tensor([0, 3, 9, 1, 3])
    logits = net(x)
    loss, parts = losses.total_loss(logits, y, net, lambda_w=lambda_w, lambda_tr=lambda_tr,
                                    lambda_tb=lambda_tb, tb_mode="taylor")
    rows = logits.detach().double().tolist()
    ce = sum(math.log(sum(math.exp(v) for v in row)) - row[t]
             for row, t in zip(rows, y.tolist())) / len(rows)
    l2 = sum(float((m.weight.detach().double() ** 2).sum()) for m in net.modules()
             if isinstance(m, (nn.Conv2d, nn.Linear)))
    l2_check = 0.0
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            l2_check += sum(v * v for v in m.weight.detach().reshape(-1).tolist())
    assert l2 == pytest.approx(l2_check, rel=1e-9)
    tr = sum((m.tau.item() - m.tau0.item()) ** 2 + (m.td.item() - m.td0.item()) ** 2
             for m in net.modules() if isinstance(m, TemporalKernel))
    tb = hand_tb(net, taylor_p)
    expected = ce + lambda_w * l2 + lambda_tr * tr + lambda_tb * tb
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert parts["ce"] == pytest.approx(ce, rel=1e-5)
    if lambda_w:
        assert parts["l2"] == pytest.approx(l2, rel=1e-5)
    if lambda_tr:
        assert parts["tr"] == pytest.approx(tr, rel=1e-5)
    if lambda_tb:
        assert parts["tb"] == pytest.approx(tb, rel=1e-5)
    loss.backward()
    assert child(net, "output").weight.grad is not None


# --------------------------------------------------------------------------- efficiency


T_MLP = 4


def _first_spike(u, thr):
    for k, th in enumerate(thr):
        if u >= th:
            return k
    return len(thr)


def _tiny_mlp():
    # the hand computation below is the first-crossing rule (ceil); round: test_quantizer.py
    net = mlp(num_classes=3, in_shape=(1, 2, 2), hidden=(3,), T=T_MLP, quantizer="ceil")
    W = [[1.0, 1.0, 1.0, 1.0],
         [0.1, 0.0, 0.1, 0.0],
         [0.0, 2.0, 0.0, -1.0]]
    V = [[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0]]
    with torch.no_grad():
        child(net, "fc1").weight.copy_(torch.tensor(W))
        bn = child(net, "bn1")
        bn.running_mean.zero_()
        bn.running_var.fill_(1.0)
        bn.weight.fill_(1.0)
        bn.bias.zero_()
        child(net, "output").weight.copy_(torch.tensor(V))
        child(net, "output").bias.zero_()
    return net, W, V


def _hand_mlp(x_rows, W, V, eps):
    """Spike counts and logits, by hand: thresholds exp(-k/10) (tau=10, td=0, theta0=1)."""
    thr = [math.exp(-k / 10.0) for k in range(T_MLP)]
    kappa = thr
    in_spikes, hid_spikes, logits = [], [], []
    for row in x_rows:
        t_in = [_first_spike(u, thr) for u in row]
        in_spikes.append(sum(t < T_MLP for t in t_in))
        x_dec = [kappa[t] if t < T_MLP else 0.0 for t in t_in]
        z = [sum(w * v for w, v in zip(w_row, x_dec)) / math.sqrt(1.0 + eps) for w_row in W]
        for zi in z:  # test-construction guard: well away from every threshold
            assert all(abs(zi - th) > 1e-2 for th in thr)
        t_h = [_first_spike(zi, thr) for zi in z]
        hid_spikes.append(sum(t < T_MLP for t in t_h))
        h_dec = [kappa[t] if t < T_MLP else 0.0 for t in t_h]
        logits.append([sum(v * h for v, h in zip(v_row, h_dec)) for v_row in V])
    return in_spikes, hid_spikes, logits


X_ROWS = [[0.9, 0.5, 0.8, 0.0], [1.0, 0.95, 0.3, 0.76], [0.2, 0.1, 0.0, 0.74]]
Y = [0, 1, 2]


@pytest.mark.parametrize("reference,s_ref,t_ref", [("cifar10", 0.193e6, 512),
                                                   ("cifar100", 0.170e6, 512),
                                                   ("1e2,24", 100.0, 24.0)])
def test_evaluate_efficiency_by_hand(reference, s_ref, t_ref):
    net, W, V = _tiny_mlp()
    net.train()  # evaluate must switch to eval (running stats) and restore the mode
    x = torch.tensor(X_ROWS).reshape(-1, 1, 2, 2)
    y = torch.tensor(Y)
    result = metrics.evaluate(net, [(x[:2], y[:2]), (x[2:], y[2:])], reference=reference)
    assert net.training

    in_spikes, hid_spikes, logits = _hand_mlp(X_ROWS, W, V, child(net, "bn1").eps)
    n = len(X_ROWS)
    assert sum(in_spikes) > 0 and sum(hid_spikes) > 0
    s_in, s_hid = sum(in_spikes) / n, sum(hid_spikes) / n
    S = s_in + s_hid
    N = 4 + 3
    L = 2  # input encoder + one hidden spiking layer
    T_total = (L + 1) * T_MLP
    pred = [max(range(3), key=lambda j: row[j]) for row in logits]
    accuracy = sum(p == t for p, t in zip(pred, Y)) / n

    assert result["samples"] == n
    assert result["accuracy"] == pytest.approx(accuracy)
    assert result["spikes_per_sample"] == pytest.approx(S)
    assert result["without_input"]["spikes_per_sample"] == pytest.approx(s_hid)
    assert result["without_input"]["neurons"] == 3
    assert result["neurons"] == N
    assert result["time_steps"] == T_total
    assert result["sparsity"] == pytest.approx(S / N)
    assert result["spike_rate"] == pytest.approx(S / (N * T_total))
    energy = result["energy"]
    assert energy["truenorth"] == pytest.approx(0.4 * S / s_ref + 0.6 * T_total / t_ref)
    assert energy["spinnaker"] == pytest.approx(0.64 * S / s_ref + 0.36 * T_total / t_ref)
    assert energy["reference"]["spikes"] == pytest.approx(s_ref)
    assert energy["reference"]["time_steps"] == pytest.approx(t_ref)

    per_layer = result["per_layer"]
    assert len(per_layer) == L
    by_name = {entry["name"].split(".")[-1]: entry for entry in per_layer}
    assert set(by_name) == {"input", "ttfs1"}
    assert [e["name"].split(".")[-1] for e in per_layer] == ["input", "ttfs1"]
    for name, neurons, spikes in (("input", 4, s_in), ("ttfs1", 3, s_hid)):
        entry = by_name[name]
        assert entry["neurons"] == neurons
        assert entry["spikes_per_sample"] == pytest.approx(spikes)
        assert entry["sparsity"] == pytest.approx(spikes / neurons)
        assert entry["spike_rate"] == pytest.approx(spikes / (neurons * T_total))


def test_evaluate_relu_network_has_no_efficiency_figures():
    net = mlp(num_classes=3, in_shape=(1, 2, 2), hidden=(3,), activation="relu")
    result = metrics.evaluate(net, [(torch.rand(4, 1, 2, 2), torch.tensor([0, 1, 2, 0]))])
    assert "spikes_per_sample" not in result and result["samples"] == 4


def test_evaluate_empty_loader_raises():
    net, _, _ = _tiny_mlp()
    with pytest.raises(ConfigError):
        metrics.evaluate(net, [])


def test_normalised_energy_paper_example():
    ref = metrics.energy_reference("cifar10")
    e = metrics.normalised_energy(0.067e6, 544, ref, 0.4, 0.6)
    assert e == pytest.approx(0.4 * 0.067e6 / 0.193e6 + 0.6 * 544 / 512, rel=1e-12)
    assert round(e, 2) == 0.78
    e_sp = metrics.normalised_energy(0.067e6, 544, ref, 0.64, 0.36)
    assert e_sp == pytest.approx(0.64 * 0.067e6 / 0.193e6 + 0.36 * 544 / 512, rel=1e-12)


def test_efficiency_figures_direct():
    layers = [{"name": "a", "neurons": 10, "spikes_per_sample": 4.0},
              {"name": "b", "neurons": 30, "spikes_per_sample": 2.0}]
    out = metrics.efficiency_figures(layers, T=8, reference="1e3,64")
    T_total = 3 * 8
    assert out["time_steps"] == T_total
    assert out["spikes_per_sample"] == pytest.approx(6.0)
    assert out["neurons"] == 40
    assert out["sparsity"] == pytest.approx(6.0 / 40)
    assert out["spike_rate"] == pytest.approx(6.0 / (40 * T_total))
    assert out["energy"]["truenorth"] == pytest.approx(0.4 * 6 / 1e3 + 0.6 * T_total / 64)
    assert out["energy"]["spinnaker"] == pytest.approx(0.64 * 6 / 1e3 + 0.36 * T_total / 64)
    with pytest.raises(ConfigError):
        metrics.efficiency_figures([], T=8)


def test_energy_reference_parsing():
    r = metrics.energy_reference("cifar10")
    assert (r.spikes, r.time_steps) == (0.193e6, 512)
    r = metrics.energy_reference("cifar100")
    assert (r.spikes, r.time_steps) == (0.170e6, 512)
    r = metrics.energy_reference("1e5,512")
    assert (r.spikes, r.time_steps) == (1e5, 512.0)
    r = metrics.energy_reference(" 2.5e4 , 100 ")
    assert (r.spikes, r.time_steps) == (2.5e4, 100.0)
    same = metrics.EnergyReference(10.0, 20.0, "x")
    assert metrics.energy_reference(same) is same


@pytest.mark.parametrize("spec", ["cifar1000", "", "foo", "1e5", "1e5,512,3", "a,b",
                                  "0,512", "1e5,0", "-1,512", "1e5,-512"])
def test_energy_reference_bad_strings(spec):
    with pytest.raises(ConfigError):
        metrics.energy_reference(spec)


@pytest.mark.parametrize("spec", ["nan,512", "1e5,nan", "inf,512", "1e5,inf"])
def test_energy_reference_rejects_non_finite(spec):
    """A NaN or infinite reference makes every normalised energy NaN or 0."""
    with pytest.raises(ConfigError):
        metrics.energy_reference(spec)
