"""The ``quantizer`` option (SPEC §3): ``"round"`` equals the authors' rounding path, the
simulators fire on the same half-step table, and the choice survives every file format."""

import math

import pytest
import torch
from _model_helpers import randomise_batch_norm

from ttfs_plugin import functional as F
from ttfs_plugin.errors import ConfigError
from ttfs_plugin.kernel import decode, encode, kernel_table, threshold_table
from ttfs_plugin.layers import TemporalKernel, TTFSActivation
from ttfs_plugin.models import mlp, small_cnn, vgg16
from ttfs_plugin.simulation import agreement, surrogate_spike_times

T, TAU, TD, THETA0 = 32, 10.0, 0.0, 1.0


def authors_round(z, tau, td, T, theta0):
    """The authors' training path, written out: ``t = round(td - tau*ln(z/theta0))`` clipped
    to ``[0, T]``, value ``kappa(t)`` (their surrogate keeps the level ``t = T``), 0 for
    ``z <= 0``. Returns ``(t, x)``."""
    z = z.double()
    positive = z > 0
    t_real = td - tau * torch.log(torch.where(positive, z, torch.ones_like(z)) / theta0)
    t = torch.round(t_real).clamp(0, T)
    x = torch.where(positive, torch.exp(-(t - td) / tau), torch.zeros_like(z))
    t = torch.where(positive, t, torch.full_like(t, T + 1))
    return t, x, t_real


def log_spread(n, seed=0):
    """Membrane values across every region: negative, pruned, quantized, clipped."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.exp(torch.empty(n, dtype=torch.float64).uniform_(-5, 1.5, generator=gen))
    z[: n // 10] *= -1
    return z


@pytest.mark.parametrize("tau,td,T_", [(10.0, 0.0, 32), (2.0, 0.0, 8), (5.0, 3.0, 16)])
def test_round_forward_equals_the_authors_rounding_path(tau, td, T_):
    z = log_spread(20000)
    x = F.ttfs_activation(z, torch.tensor(tau, dtype=torch.float64),
                          torch.tensor(td, dtype=torch.float64), T_, THETA0, quantizer="round")
    t_ref, x_ref, t_real = authors_round(z, tau, td, T_, THETA0)
    # half-way ties (tf.round: half to even) and the authors' extra level t = T differ by design
    tie = (t_real - torch.floor(t_real) - 0.5).abs() < 1e-9
    extra_level = t_ref == T_
    keep = ~tie & ~extra_level
    assert keep.sum() > 10000 and extra_level.any()
    torch.testing.assert_close(x[keep], x_ref[keep], rtol=1e-12, atol=0)
    # the documented difference: where the authors keep kappa(T), the library does not fire
    assert torch.all(x[extra_level] == 0)


def test_round_boundaries_come_from_the_half_step_table():
    thr = threshold_table(torch.tensor(TAU, dtype=torch.float64), TD, T, THETA0, "round")
    kappa = kernel_table(TAU, TD, T).double()
    levels = torch.arange(T).double() + 0.5
    torch.testing.assert_close(thr, THETA0 * torch.exp(-(levels - TD) / TAU))
    below = torch.nextafter(thr, torch.tensor(-math.inf, dtype=torch.float64))
    assert torch.equal(encode(thr, thr), torch.arange(T))  # u = thr[k]: fires at k
    assert torch.equal(encode(below, thr), torch.arange(1, T + 1))  # just below: one later
    x = decode(encode(torch.tensor([0.0, -1.0, 1e6]).double(), thr), kappa)
    assert x.tolist() == [0.0, 0.0, kappa[0].item()]
    act = TTFSActivation(T, TAU, TD, THETA0, quantizer="round")
    assert act.firing_floor().item() == pytest.approx(math.exp(-(T - 0.5) / TAU), rel=1e-6)
    assert act.firing_floor() < TTFSActivation(T, TAU, TD, THETA0, quantizer="ceil").firing_floor()


def test_round_removes_the_downward_bias_of_ceil():
    """Mean relative error of the decoded value over quantized inputs, log-uniform."""
    z = torch.exp(torch.linspace(-(T - 2) / TAU, -0.5 / TAU, 100001, dtype=torch.float64))
    tau, td = torch.tensor(TAU, dtype=torch.float64), torch.tensor(TD, dtype=torch.float64)
    bias = {q: ((F.ttfs_activation(z, tau, td, T, quantizer=q) - z) / z).mean().item()
            for q in ("ceil", "round")}
    assert bias["ceil"] < -0.04  # about -4.8 %
    assert abs(bias["round"]) < 0.002


@pytest.mark.parametrize("grad_mode", ["ste", "decode"])
def test_round_gradients_follow_spec_4_with_the_rounded_time(grad_mode):
    z = log_spread(4000, seed=3).abs().requires_grad_()
    tau = torch.tensor(7.0, dtype=torch.float64, requires_grad=True)
    td = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    g = torch.randn(z.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x = F.ttfs_activation(z, tau, td, 16, 1.0, grad_mode, quantizer="round")
    (x * g).sum().backward()
    t = encode(z.detach(), threshold_table(7.0, 1.0, 16, 1.0, "round").double())
    q, clipped = (t > 0) & (t < 16), t == 0
    xd = x.detach()
    t_real = 1.0 - 7.0 * torch.log(z.detach())
    if grad_mode == "ste":
        gz = torch.where(q, g * xd / z.detach(), torch.zeros_like(xd))
        # quantized: x (t - t~) / tau^2; clipped: -x td / tau^2 (td = 1)
        gtau = ((g * xd)[q] * (t[q] - t_real[q])).sum() / 49 - (g * xd)[clipped].sum() / 49
        gtd = (g * xd)[clipped].sum() / 7
    else:
        gz = torch.where(q, g, torch.zeros_like(g))
        gtau = ((g * xd) * (t - 1.0)).sum() / 49
        gtd = (g * xd).sum() / 7
    torch.testing.assert_close(z.grad, gz)
    torch.testing.assert_close(tau.grad, gtau)
    torch.testing.assert_close(td.grad, gtd)


CASES = {
    "mlp": (lambda: mlp(quantizer="round"), (64, 1, 8, 8)),
    "cnn-max": (lambda: small_cnn(channels=(4, 8), hidden=16, quantizer="round"),
                (16, 1, 28, 28)),
    "vgg16-narrow": (lambda: vgg16(width=1 / 16, quantizer="round"), (4, 3, 32, 32)),
}


def randomised(build):
    torch.manual_seed(0)
    return randomise_batch_norm(build()).double()


@pytest.mark.parametrize("backend", ["snntorch", "norse"])
@pytest.mark.parametrize("case", list(CASES))
def test_float64_simulation_on_the_half_step_table_gives_the_surrogate_spike_times(case,
                                                                                   backend):
    adapter = pytest.importorskip(f"ttfs_plugin.{backend}")
    build, shape = CASES[case]
    model = randomised(build)
    x = torch.rand(*shape, dtype=torch.float64)
    logits, times = surrogate_spike_times(model, x)
    convert = adapter.to_snntorch if backend == "snntorch" else adapter.to_norse
    net = convert(model)
    assert {m.quantizer for m in net.modules() if isinstance(m, TemporalKernel)} == {"round"}
    result = adapter.simulate(net, x)
    assert agreement(result, logits, times) == {"agreement_with_surrogate": 1.0,
                                                 "spike_time_agreement": 1.0}
    torch.testing.assert_close(result.logits, logits, atol=1e-9, rtol=0)
    # and not by accident: the ceil table fires elsewhere
    ceil_times = surrogate_spike_times(_with_quantizer(model, "ceil"), x)[1]
    assert any(not torch.equal(ceil_times[n], times[n]) for n in times)


def _with_quantizer(model, quantizer):
    import copy
    other = copy.deepcopy(model)
    for m in other.modules():
        if isinstance(m, TemporalKernel):
            m.quantizer = quantizer
    return other


@pytest.mark.parametrize("backend", ["snntorch", "norse"])
def test_the_quantizer_survives_save_load_and_nir(tmp_path, backend):
    adapter = pytest.importorskip(f"ttfs_plugin.{backend}")
    tnir = pytest.importorskip("ttfs_plugin.nir")
    model = randomised(CASES["mlp"][0])
    x = torch.rand(8, 1, 8, 8, dtype=torch.float64)
    convert = adapter.to_snntorch if backend == "snntorch" else adapter.to_norse
    direct = adapter.simulate(convert(model), x)
    adapter.save(convert(model), tmp_path / "net.pt")
    tnir.write(model, tmp_path / "net.nir")
    for net in (adapter.load(tmp_path / "net.pt"), tnir.from_nir(tmp_path / "net.nir", backend)):
        assert {m.quantizer for m in net.modules()
                if isinstance(m, TemporalKernel)} == {"round"}
        assert torch.equal(adapter.simulate(net, x).logits, direct.logits)


def test_the_quantizer_is_checked_everywhere():
    with pytest.raises(ConfigError, match="unknown quantizer 'floor'"):
        threshold_table(TAU, TD, T, THETA0, "floor")
    with pytest.raises(ConfigError, match="unknown quantizer"):
        mlp(quantizer="nearest")
    with pytest.raises(ConfigError, match="unknown quantizer"):
        F.ttfs_activation(torch.ones(3), torch.tensor(TAU), torch.tensor(TD), T,
                          quantizer="Round")


def test_norse_parameters_carry_the_quantizer():
    tnorse = pytest.importorskip("ttfs_plugin.norse")
    cell = tnorse.TTFSCell(1, T=8, quantizer="round")
    assert cell.p.quantizer == "round"
    p = cell.p._replace(quantizer="nearest")
    with pytest.raises(ConfigError, match="unknown quantizer"):
        tnorse.ttfs_feed_forward_step(torch.zeros(2, 3), None, p)


def test_a_network_saved_before_the_option_existed_loads_as_ceil():
    """Silent-wrong guard: old checkpoints were all ceil, whatever the default is now."""
    from ttfs_plugin.models import NetworkConfig, TTFSNetwork

    old = mlp(quantizer="round").config.to_dict()
    del old["quantizer"], old["input_mode"]
    net = TTFSNetwork(NetworkConfig.from_dict(old))
    assert net.config.quantizer == "ceil" and net.config.input_mode == "encode"
    assert {m.quantizer for m in net.modules() if isinstance(m, TemporalKernel)} == {"ceil"}
    assert mlp().config.quantizer == "ceil"  # what a new network gets (docs/spec.md §3)
