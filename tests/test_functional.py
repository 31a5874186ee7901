"""Surrogate activation, its gradients, SR, TR and the TB spike proxy (SPEC §3–7).

Expected values are computed independently, elementwise, with Python ``math``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ttfs_plugin.errors import ConfigError
from ttfs_plugin.functional import (
    expected_spikes,
    kernel_regularisation,
    relaxation_probability,
    relaxed_activation,
    spike_probability,
    ttfs_activation,
)
from ttfs_plugin.kernel import QUANTIZERS, decode, encode, kernel_table, threshold_table
from ttfs_plugin.layers import InputEncoder, TTFSActivation

F64 = torch.float64


def ref_thresholds(tau, td, T, theta0, quantizer="ceil"):
    """SPEC §3: ``theta0·kappa(k)`` (ceil) or ``theta0·kappa(k + 1/2)`` (round)."""
    shift = 0.5 if quantizer == "round" else 0.0
    return [theta0 * math.exp(-(k + shift - td) / tau) for k in range(T)]


def ref_spike_time(z, thr):
    for k, th in enumerate(thr):
        if z >= th:
            return k
    return len(thr)


def three_region_inputs(tau, td, T, theta0, quantizer="ceil"):
    """Values in all three regions, far from every threshold (no rounding ambiguity)."""
    thr = ref_thresholds(tau, td, T, theta0, quantizer)
    clipped = [thr[0] * 1.3, thr[0] * 5.0, thr[0] * 1.01]
    quantized = [math.sqrt(thr[k - 1] * thr[k]) for k in range(1, T)]
    pruned = [thr[-1] * 0.5, thr[-1] * 0.99, 0.0, -0.3, -2.0]
    values = clipped + quantized + pruned
    for v in values:  # test-construction guard: nothing within 0.1 % of a threshold
        assert all(abs(v - th) > 1e-3 * th for th in thr)
    return values, thr


CASES = [  # (tau, td, T, theta0)
    (3.0, 1.5, 8, 0.7),
    (5.0, -2.0, 16, 1.3),
    (10.0, 0.0, 32, 1.0),
    (2.0, 0.8, 5, 2.2),
]


# --------------------------------------------------------------------------- forward


@pytest.mark.parametrize("tau,td,T,theta0", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("grad_mode", ["ste", "decode"])
@pytest.mark.parametrize("quantizer", QUANTIZERS)
def test_forward_equals_decode_encode(tau, td, T, theta0, dtype, grad_mode, quantizer):
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(4, 7, generator=gen, dtype=dtype) * 1.5
    values, _ = three_region_inputs(tau, td, T, theta0, quantizer)
    z = torch.cat([z.reshape(-1), torch.tensor(values, dtype=dtype)])
    tau_t, td_t = torch.tensor(tau, dtype=dtype), torch.tensor(td, dtype=dtype)
    x = ttfs_activation(z, tau_t, td_t, T, theta0, grad_mode, quantizer)
    expected = decode(encode(z, threshold_table(tau_t, td_t, T, theta0, quantizer)),
                      kernel_table(tau_t, td_t, T))
    assert x.dtype == dtype and x.shape == z.shape
    assert torch.equal(x, expected)


@pytest.mark.parametrize("tau,td,T,theta0", CASES)
@pytest.mark.parametrize("quantizer", QUANTIZERS)
def test_forward_values_by_hand(tau, td, T, theta0, quantizer):
    values, thr = three_region_inputs(tau, td, T, theta0, quantizer)
    z = torch.tensor(values, dtype=F64)
    x = ttfs_activation(z, torch.tensor(tau, dtype=F64), torch.tensor(td, dtype=F64), T, theta0,
                        quantizer=quantizer)
    for zi, xi in zip(values, x.tolist()):
        t = ref_spike_time(zi, thr)
        expected = 0.0 if t == T else math.exp(-(t - td) / tau)
        assert xi == pytest.approx(expected, rel=1e-12, abs=0.0)


# --------------------------------------------------------------------------- gradients


def ref_gradients(values, g, tau, td, T, theta0, mode, quantizer="ceil"):
    thr = ref_thresholds(tau, td, T, theta0, quantizer)
    shift = 0.5 if quantizer == "round" else 0.0
    dz, dtau, dtd = [], 0.0, 0.0
    for z, gi in zip(values, g):
        t = ref_spike_time(z, thr)
        if t == T:  # pruned
            dz.append(0.0)
            continue
        x = math.exp(-(t - td) / tau)
        if mode == "ste":
            if t == 0:  # clipped: x = exp(td/tau)
                dz.append(0.0)
                dtd += gi * x / tau
                dtau += gi * (-x * td / tau**2)
            else:
                t_real = td - tau * math.log(z / theta0)
                assert t - 1 + shift < t_real <= t + shift  # ceil(t~), or round(t~)
                dz.append(gi * x / z)
                dtau += gi * x * (t - t_real) / tau**2
        else:  # "decode"
            dz.append(gi / theta0 if t > 0 else 0.0)
            dtau += gi * x * (t - td) / tau**2
            dtd += gi * x / tau
    return dz, dtau, dtd


@pytest.mark.parametrize("tau,td,T,theta0", CASES)
@pytest.mark.parametrize("grad_mode", ["ste", "decode"])
@pytest.mark.parametrize("quantizer", QUANTIZERS)
def test_gradients_match_spec(tau, td, T, theta0, grad_mode, quantizer):
    values, thr = three_region_inputs(tau, td, T, theta0, quantizer)
    regions = {ref_spike_time(v, thr) for v in values}
    assert 0 in regions and T in regions and any(0 < t < T for t in regions)
    rng = np.random.default_rng(7)
    g = rng.normal(size=len(values)).tolist()

    z = torch.tensor(values, dtype=F64, requires_grad=True)
    tau_t = torch.tensor(tau, dtype=F64, requires_grad=True)
    td_t = torch.tensor(td, dtype=F64, requires_grad=True)
    x = ttfs_activation(z, tau_t, td_t, T, theta0, grad_mode, quantizer)
    x.backward(torch.tensor(g, dtype=F64))

    dz, dtau, dtd = ref_gradients(values, g, tau, td, T, theta0, grad_mode, quantizer)
    assert z.grad.tolist() == pytest.approx(dz, rel=1e-10, abs=1e-14)
    assert tau_t.grad.item() == pytest.approx(dtau, rel=1e-10, abs=1e-14)
    assert td_t.grad.item() == pytest.approx(dtd, rel=1e-10, abs=1e-14)


@pytest.mark.parametrize("grad_mode", ["ste", "decode"])
@pytest.mark.parametrize("quantizer", QUANTIZERS)
def test_gradients_on_multidim_input(grad_mode, quantizer):
    tau, td, T, theta0 = 4.0, 1.0, 12, 0.8
    values, _ = three_region_inputs(tau, td, T, theta0, quantizer)
    values = values[: (len(values) // 2) * 2]
    rng = np.random.default_rng(3)
    g = rng.normal(size=len(values)).tolist()
    z = torch.tensor(values, dtype=F64).reshape(2, -1).requires_grad_()
    tau_t = torch.tensor(tau, dtype=F64, requires_grad=True)
    td_t = torch.tensor(td, dtype=F64, requires_grad=True)
    ttfs_activation(z, tau_t, td_t, T, theta0, grad_mode, quantizer).backward(
        torch.tensor(g, dtype=F64).reshape(2, -1))
    dz, dtau, dtd = ref_gradients(values, g, tau, td, T, theta0, grad_mode, quantizer)
    assert z.grad.reshape(-1).tolist() == pytest.approx(dz, rel=1e-10, abs=1e-14)
    assert tau_t.grad.item() == pytest.approx(dtau, rel=1e-10, abs=1e-14)
    assert td_t.grad.item() == pytest.approx(dtd, rel=1e-10, abs=1e-14)


def test_module_gradients_reach_kernel_parameters():
    neuron = TTFSActivation(T=8, tau=3.0, td=0.5, theta0=0.9, grad_mode="decode")
    z = torch.tensor([2.0, 0.6, -1.0])
    neuron(z).sum().backward()
    assert neuron.kernel.tau.grad is not None and neuron.kernel.tau.grad.item() != 0.0
    assert neuron.kernel.td.grad is not None and neuron.kernel.td.grad.item() != 0.0


def test_unknown_grad_mode_raises():
    z = torch.tensor([0.5])
    with pytest.raises(ConfigError):
        ttfs_activation(z, torch.tensor(10.0), torch.tensor(0.0), 32, 1.0, "sigmoid")
    with pytest.raises(ConfigError):
        TTFSActivation(grad_mode="STE")


def test_bad_window_raises():
    with pytest.raises(ConfigError):
        ttfs_activation(torch.tensor([0.5]), torch.tensor(10.0), torch.tensor(0.0), 1, 1.0)


# --------------------------------------------------------------------------- SR


@pytest.mark.parametrize("target", [1, 2, 5, 50, 500])
def test_relaxation_probability(target):
    for e in range(0, target + 3):
        expected = max(0.0, 1.0 - (e + 1) / target)
        assert relaxation_probability(e, target) == pytest.approx(expected, abs=1e-15)
    assert relaxation_probability(target - 1, target) == 0.0
    if target > 1:
        assert relaxation_probability(target - 2, target) > 0.0
        assert relaxation_probability(0, target) == pytest.approx(1 - 1 / target)
    # non-increasing over epochs
    ps = [relaxation_probability(e, target) for e in range(target + 2)]
    assert all(a >= b for a, b in zip(ps, ps[1:]))


def test_relaxation_probability_off_and_invalid():
    assert all(relaxation_probability(e, 0) == 0.0 for e in range(20))
    with pytest.raises(ConfigError):
        relaxation_probability(0, -1)


def test_relaxed_activation():
    z = torch.tensor([-1.0, 0.0, 0.5, 3.0])
    assert relaxed_activation(z, 2.0).tolist() == [0.0, 0.0, 0.25, 1.5]


def _quantized_input():
    # values that the TTFS activation changes (not a kernel value, not relu(z)/theta0)
    return torch.tensor([[0.55, 0.83, 0.97, -0.2, 1.7]])


def test_eval_mode_never_relaxed():
    neuron = TTFSActivation(T=16, tau=5.0, td=0.3, theta0=0.9)
    neuron.relax_probability = 1.0
    neuron.eval()
    z = _quantized_input()
    ttfs = ttfs_activation(z, neuron.kernel.tau, neuron.kernel.td, 16, 0.9)
    assert not torch.allclose(ttfs, relaxed_activation(z, 0.9))
    for _ in range(20):
        assert torch.equal(neuron(z), ttfs)


def test_train_mode_relaxed_with_probability_one_and_zero():
    neuron = TTFSActivation(T=16, tau=5.0, td=0.3, theta0=0.9)
    neuron.train()
    z = _quantized_input()
    ttfs = ttfs_activation(z, neuron.kernel.tau, neuron.kernel.td, 16, 0.9)
    neuron.relax_probability = 1.0
    for _ in range(20):
        assert torch.allclose(neuron(z), torch.relu(z) / 0.9, rtol=0, atol=1e-7)
    neuron.relax_probability = 0.0
    for _ in range(20):
        assert torch.equal(neuron(z), ttfs)


def test_train_mode_relaxed_fraction_near_p():
    torch.manual_seed(1234)
    first = TTFSActivation(T=16, tau=5.0, td=0.3, theta0=0.9)
    second = TTFSActivation(T=16, tau=5.0, td=0.3, theta0=0.9)
    for n in (first, second):
        n.train()
        n.relax_probability = 0.5
    z = _quantized_input()
    relaxed = torch.relu(z) / 0.9
    ttfs = ttfs_activation(z, first.kernel.tau, first.kernel.td, 16, 0.9)
    n_pass = 4000
    count_a = count_b = count_both = 0
    for _ in range(n_pass):
        a, b = first(z), second(z)
        ra = torch.allclose(a, relaxed, rtol=0, atol=1e-7)
        rb = torch.allclose(b, relaxed, rtol=0, atol=1e-7)
        assert ra or torch.equal(a, ttfs)
        assert rb or torch.equal(b, ttfs)
        count_a += ra
        count_b += rb
        count_both += ra and rb
    sigma = math.sqrt(0.25 / n_pass)
    assert abs(count_a / n_pass - 0.5) < 4 * sigma
    assert abs(count_b / n_pass - 0.5) < 4 * sigma
    # layers draw independently: both relaxed ~ 1/4
    assert abs(count_both / n_pass - 0.25) < 4 * math.sqrt(0.25 * 0.75 / n_pass)


def test_input_encoder_never_relaxed():
    enc = InputEncoder((5,), T=16, tau=5.0, td=0.3, theta0=0.9)
    enc.train()
    enc.relax_probability = 1.0
    x = torch.tensor([[0.55, 0.83, 0.97, 0.0, 1.0]])
    ttfs = ttfs_activation(x, enc.kernel.tau, enc.kernel.td, 16, 0.9)
    assert not torch.allclose(ttfs, relaxed_activation(x, 0.9))
    for _ in range(20):
        assert torch.equal(enc(x), ttfs)


# --------------------------------------------------------------------------- TR


@pytest.mark.parametrize("tau,td,tau0,td0", [(10.0, 0.0, 10.0, 0.0), (8.5, 1.2, 10.0, 0.0),
                                             (3.0, -2.0, 5.0, 6.93)])
def test_kernel_regularisation(tau, td, tau0, td0):
    tau_t = torch.tensor(tau, dtype=F64, requires_grad=True)
    td_t = torch.tensor(td, dtype=F64, requires_grad=True)
    r = kernel_regularisation(tau_t, td_t, tau0, td0)
    assert r.item() == pytest.approx((tau - tau0) ** 2 + (td - td0) ** 2, rel=1e-12, abs=1e-15)
    r.backward()
    assert tau_t.grad.item() == pytest.approx(2 * (tau - tau0), abs=1e-12)
    assert td_t.grad.item() == pytest.approx(2 * (td - td0), abs=1e-12)


# --------------------------------------------------------------------------- TB


def phi_cdf(a):
    return 0.5 * (1.0 + math.erf(a / math.sqrt(2.0)))


def phi_pdf(a):
    return math.exp(-a * a / 2) / math.sqrt(2 * math.pi)


def taylor_p(a):
    a = max(-math.sqrt(2.0), min(math.sqrt(2.0), a))
    return 1.0 - (0.5 + (a - a**3 / 6.0) / math.sqrt(2.0 * math.pi))


GAMMA = [1.0, 0.5, -2.0, 0.3, 0.05, 1.7]
BETA = [0.0, 0.2, -0.5, 0.05, 0.3, -4.0]
FLOOR = 0.1


def test_spike_probability_exact_matches_erf():
    gamma = torch.tensor(GAMMA, dtype=F64)
    beta = torch.tensor(BETA, dtype=F64)
    p = spike_probability(gamma, beta, torch.tensor(FLOOR, dtype=F64), "exact")
    expected = [1.0 - phi_cdf((FLOOR - b) / abs(g)) for g, b in zip(GAMMA, BETA)]
    assert p.tolist() == pytest.approx(expected, rel=1e-12, abs=1e-15)
    # default mode is "exact"
    assert torch.equal(spike_probability(gamma, beta, torch.tensor(FLOOR, dtype=F64)), p)


def test_spike_probability_exact_matches_monte_carlo():
    gamma = [1.0, 0.5, -2.0, 0.3]
    beta = [0.0, 0.2, -0.5, 0.05]
    floor = 0.25
    p = spike_probability(torch.tensor(gamma, dtype=F64), torch.tensor(beta, dtype=F64),
                          torch.tensor(floor, dtype=F64), "exact")
    rng = np.random.default_rng(2021)
    n = 200_000
    for c, (g, b) in enumerate(zip(gamma, beta)):
        samples = rng.normal(b, abs(g), size=n)
        freq = float(np.mean(samples >= floor))
        pc = p[c].item()
        sigma = math.sqrt(max(pc * (1 - pc), 1e-12) / n)
        assert abs(freq - pc) < 4 * sigma + 1e-6


def test_spike_probability_taylor_formula_and_closeness():
    gamma = torch.tensor(GAMMA, dtype=F64)
    beta = torch.tensor(BETA, dtype=F64)
    p = spike_probability(gamma, beta, torch.tensor(FLOOR, dtype=F64), "taylor")
    expected = [taylor_p((FLOOR - b) / abs(g)) for g, b in zip(GAMMA, BETA)]
    assert p.tolist() == pytest.approx(expected, rel=1e-12, abs=1e-15)
    # |a| > sqrt(2) is clamped: channel 4 has a = 4 -> P = 1 - [1/2 + (sqrt2 - 2sqrt2/6)/sqrt(2pi)]
    a4 = (FLOOR - BETA[4]) / abs(GAMMA[4])
    assert a4 < -math.sqrt(2)
    s2 = math.sqrt(2.0)
    assert p[4].item() == pytest.approx(1 - (0.5 + (-s2 + s2**3 / 6) / math.sqrt(2 * math.pi)))


def test_spike_probability_taylor_close_to_exact_for_small_a():
    a_values = np.linspace(-0.99, 0.99, 41)
    gamma = torch.full((len(a_values),), 0.8, dtype=F64)
    floor = 0.3
    beta = torch.tensor([floor - a * 0.8 for a in a_values], dtype=F64)
    exact = spike_probability(gamma, beta, torch.tensor(floor, dtype=F64), "exact")
    taylor = spike_probability(gamma, beta, torch.tensor(floor, dtype=F64), "taylor")
    assert (exact - taylor).abs().max().item() < 0.02
    for a, pe in zip(a_values, exact.tolist()):
        assert pe == pytest.approx(1 - phi_cdf(a), abs=1e-12)


@pytest.mark.parametrize("mode", ["exact", "taylor"])
def test_spike_probability_negative_gamma_uses_abs(mode):
    gamma = torch.tensor(GAMMA, dtype=F64)
    beta = torch.tensor(BETA, dtype=F64)
    floor = torch.tensor(FLOOR, dtype=F64)
    p_pos = spike_probability(gamma.abs(), beta, floor, mode)
    p_neg = spike_probability(-gamma.abs(), beta, floor, mode)
    assert torch.allclose(p_pos, p_neg, rtol=0, atol=1e-15)
    assert bool(((p_pos >= 0) & (p_pos <= 1)).all())


def test_spike_probability_gradient_reaches_gamma_beta_not_floor():
    gamma = torch.tensor(GAMMA[:4], dtype=F64, requires_grad=True)
    beta = torch.tensor(BETA[:4], dtype=F64, requires_grad=True)
    floor = torch.tensor(FLOOR, dtype=F64, requires_grad=True)
    spike_probability(gamma, beta, floor, "exact").sum().backward()
    assert floor.grad is None
    # P = 1 - Phi(a), a = (floor - beta)/|gamma|: dP/dbeta = pdf(a)/|gamma|,
    # dP/dgamma = pdf(a) * a / |gamma| * sign(gamma)
    for c, (g, b) in enumerate(zip(GAMMA[:4], BETA[:4])):
        a = (FLOOR - b) / abs(g)
        assert beta.grad[c].item() == pytest.approx(phi_pdf(a) / abs(g), rel=1e-10)
        assert gamma.grad[c].item() == pytest.approx(
            phi_pdf(a) * a / abs(g) * math.copysign(1.0, g), rel=1e-10, abs=1e-15)


def test_spike_probability_taylor_gradient_reaches_gamma_beta_not_floor():
    gamma = torch.tensor([1.0, 0.7], dtype=F64, requires_grad=True)
    beta = torch.tensor([0.0, 0.3], dtype=F64, requires_grad=True)
    floor = torch.tensor(0.2, dtype=F64, requires_grad=True)
    spike_probability(gamma, beta, floor, "taylor").sum().backward()
    assert floor.grad is None
    assert bool((beta.grad > 0).all()) and bool((gamma.grad.abs() > 0).all())


def test_expected_spikes():
    gamma = torch.tensor(GAMMA, dtype=F64, requires_grad=True)
    beta = torch.tensor(BETA, dtype=F64)
    floor = torch.tensor(FLOOR, dtype=F64)
    for mode, pfun in (("exact", lambda a: 1 - phi_cdf(a)), ("taylor", taylor_p)):
        s = expected_spikes(gamma, beta, floor, 49, mode)
        expected = 49 * sum(pfun((FLOOR - b) / abs(g)) for g, b in zip(GAMMA, BETA))
        assert s.item() == pytest.approx(expected, rel=1e-12)
        assert s.dim() == 0


def test_unknown_spike_proxy_mode_raises():
    with pytest.raises(ConfigError):
        spike_probability(torch.ones(2), torch.zeros(2), torch.tensor(0.1), "gauss")
