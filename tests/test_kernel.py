"""Temporal kernel, threshold table, encoding and decoding (SPEC §2–3).

Expected values are computed independently: tables with ``math.exp``, spike times with the
step-by-step simulator definition (first ``k`` with ``u >= thr[k]``, ``T`` if none).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ttfs_plugin.errors import ConfigError
from ttfs_plugin.kernel import (
    check_kernel_values,
    check_window,
    decode,
    encode,
    kernel_table,
    spike_regions,
    tables,
    threshold_table,
    x_max,
    x_min,
)
from ttfs_plugin.layers import TTFSActivation

DTYPES = (torch.float32, torch.float64)
REL_TOL = {torch.float32: 2e-6, torch.float64: 1e-13}


def ref_kernel(tau: float, td: float, T: int, shift: float = 0.0) -> list[float]:
    """``kappa(k + shift)``; the threshold table is ``theta0·`` this with ``shift = 1/2`` under
    the round quantizer (SPEC §3)."""
    return [math.exp(-(k + shift - td) / tau) for k in range(T)]


SHIFTS = {"ceil": 0.0, "round": 0.5}


def simulate(u: torch.Tensor, thr: torch.Tensor) -> list[int]:
    """The simulator's definition: first k with ``u >= thr[k]``, T if none (per element).

    Both operands are converted to Python floats (exact for float32 and float64), so the
    comparison is exactly the one a step-by-step simulation in ``thr``'s dtype makes.
    """
    table = [float(v) for v in thr.tolist()]
    T = len(table)
    out = []
    for value in u.reshape(-1).tolist():
        t = T
        for k in range(T):
            if value >= table[k]:
                t = k
                break
        out.append(t)
    return out


def _params(tau, td, dtype):
    return torch.tensor(tau, dtype=dtype), torch.tensor(td, dtype=dtype)


# --------------------------------------------------------------------------- tables


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tau,td,T,theta0", [(10.0, 0.0, 32, 1.0), (3.0, 1.5, 8, 0.7),
                                              (25.0, -4.0, 64, 2.5), (0.7, 2.0, 5, 0.3)])
@pytest.mark.parametrize("quantizer", list(SHIFTS))
def test_tables_match_formula_and_decrease(dtype, tau, td, T, theta0, quantizer):
    tau_t, td_t = _params(tau, td, dtype)
    kern = kernel_table(tau_t, td_t, T)
    thr = threshold_table(tau_t, td_t, T, theta0, quantizer)
    assert kern.shape == (T,) and thr.shape == (T,)
    assert kern.dtype == dtype and thr.dtype == dtype
    expected = ref_kernel(tau, td, T)
    levels = ref_kernel(tau, td, T, SHIFTS[quantizer])
    for k in range(T):
        assert float(kern[k]) == pytest.approx(expected[k], rel=REL_TOL[dtype])
        assert float(thr[k]) == pytest.approx(theta0 * levels[k], rel=REL_TOL[dtype])
    assert bool((thr[1:] < thr[:-1]).all()), "threshold table must be strictly decreasing"
    assert bool((kern[1:] < kern[:-1]).all())
    assert bool((thr > 0).all())


def test_tables_accept_python_floats():
    kern = kernel_table(10.0, 0.0, 32)
    thr = threshold_table(10.0, 0.0, 32, 1.0, "ceil")
    expected = ref_kernel(10.0, 0.0, 32)
    for k in range(32):
        assert float(kern[k]) == pytest.approx(expected[k], rel=2e-6)
        assert float(thr[k]) == pytest.approx(expected[k], rel=2e-6)
    # the default is the ceil quantizer's table (docs/spec.md §3)
    assert torch.equal(threshold_table(10.0, 0.0, 32, 1.0), thr)


def test_tables_differentiable_in_tau_td():
    tau = torch.tensor(4.0, dtype=torch.float64, requires_grad=True)
    td = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    kernel_table(tau, td, 6).sum().backward()
    # d/dtau exp(-(k-td)/tau) = exp(..)*(k-td)/tau^2 ; d/dtd = exp(..)/tau
    exp_tau = sum(math.exp(-(k - 0.5) / 4.0) * (k - 0.5) / 16.0 for k in range(6))
    exp_td = sum(math.exp(-(k - 0.5) / 4.0) / 4.0 for k in range(6))
    assert tau.grad.item() == pytest.approx(exp_tau, rel=1e-12)
    assert td.grad.item() == pytest.approx(exp_td, rel=1e-12)


@pytest.mark.parametrize("tau,td,T", [(10.0, 0.0, 32), (3.0, 1.5, 8), (7.0, -2.0, 16),
                                      (10.0, 10.0 * math.log(2.0), 32)])
def test_x_max_x_min(tau, td, T):
    tau_t, td_t = _params(tau, td, torch.float64)
    assert float(x_max(tau_t, td_t)) == pytest.approx(math.exp(td / tau), rel=1e-13)
    assert float(x_min(tau_t, td_t, T)) == pytest.approx(math.exp(-(T - 1 - td) / tau), rel=1e-13)
    kern = kernel_table(tau_t, td_t, T)
    assert float(x_max(tau_t, td_t)) == pytest.approx(float(kern[0]), rel=1e-13)
    assert float(x_min(tau_t, td_t, T)) == pytest.approx(float(kern[-1]), rel=1e-13)


def test_x_max_defaults():
    assert float(x_max(10.0, 0.0)) == pytest.approx(1.0)
    assert float(x_max(10.0, 10.0 * math.log(2.0))) == pytest.approx(2.0, rel=1e-6)
    assert float(x_min(10.0, 0.0, 32)) == pytest.approx(math.exp(-3.1), rel=1e-6)


# --------------------------------------------------------------------------- encode


@st.composite
def encode_cases(draw):
    tau = draw(st.floats(0.5, 50.0, allow_nan=False))
    td = draw(st.floats(-10.0, 10.0, allow_nan=False))
    T = draw(st.integers(2, 64))
    theta0 = draw(st.floats(0.2, 3.0, allow_nan=False))
    dtype = draw(st.sampled_from(DTYPES))
    width = 32 if dtype == torch.float32 else 64
    randoms = draw(st.lists(st.floats(-5.0, 5.0, allow_nan=False, width=width), max_size=40))
    large = draw(st.lists(st.floats(1.0, 2.0**99, allow_nan=False, width=width), max_size=5))
    tiny = draw(st.lists(st.floats(0.0, 2.0**-10, allow_nan=False, width=width), max_size=5))
    return tau, td, T, theta0, dtype, randoms + large + tiny


@settings(deadline=None, max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(encode_cases())
def test_encode_equals_step_by_step_simulation(case):
    tau, td, T, theta0, dtype, extra = case
    tau_t, td_t = _params(tau, td, dtype)
    thr = threshold_table(tau_t, td_t, T, theta0)
    assert thr.dtype == dtype
    up = torch.nextafter(thr, torch.full_like(thr, math.inf))
    down = torch.nextafter(thr, torch.full_like(thr, -math.inf))
    special = torch.tensor([0.0, -0.0, -1.0, -1e-30, -1e6, 1e6, 1.0], dtype=dtype)
    u = torch.cat([thr, up, down, -thr, thr * 0.5, thr * 2.0, special,
                   torch.tensor(extra, dtype=dtype)])
    t = encode(u, thr)
    assert t.dtype == torch.int64
    assert t.shape == u.shape
    assert t.tolist() == simulate(u, thr)
    # the table entries themselves spike exactly at their own k (u >= thr[k]) ...
    if bool((thr[1:] < thr[:-1]).all()):
        assert t[:T].tolist() == list(range(T))
        # ... and one ulp below the entry the spike comes one step later
        assert t[2 * T:3 * T].tolist() == list(range(1, T + 1))


@pytest.mark.parametrize("dtype", DTYPES)
def test_encode_keeps_shape_and_matches_simulation_on_batches(dtype):
    gen = torch.Generator().manual_seed(0)
    thr = threshold_table(torch.tensor(10.0, dtype=dtype), torch.tensor(0.0, dtype=dtype), 32, 1.0)
    u = (torch.rand(3, 4, 5, generator=gen, dtype=dtype) * 1.4 - 0.2)
    t = encode(u, thr)
    assert t.shape == u.shape
    assert t.reshape(-1).tolist() == simulate(u, thr)


def test_encode_does_not_track_gradients():
    thr = threshold_table(10.0, 0.0, 8, 1.0)
    u = torch.tensor([0.5, 0.95, 1.2], requires_grad=True)
    t = encode(u, thr)
    assert not t.requires_grad


def test_encode_nan_does_not_spike():
    """A NaN membrane never satisfies ``u >= thr[k]``: the simulator gives "no spike" (t = T)."""
    thr = threshold_table(10.0, 0.0, 8, 1.0)
    u = torch.tensor([float("nan"), float("inf"), -float("inf")])
    assert encode(u, thr).tolist() == simulate(u, thr) == [8, 0, 8]


@pytest.mark.parametrize("tau,T", [(0.5, 64), (0.2, 32)])
def test_zero_input_never_spikes_in_float32(tau, T):
    """SPEC §3: the pruned region includes every ``u <= 0``; holds for kernels a float32
    model can legitimately reach (tau is only clamped at TAU_MIN = 1e-2)."""
    thr = threshold_table(tau, 0.0, T, 1.0)
    assert thr.dtype == torch.float32
    u = torch.tensor([0.0, -0.0, -1.0])
    assert encode(u, thr).tolist() == [T, T, T]
    neuron = TTFSActivation(T=T, tau=tau)
    assert int(neuron.count_spikes(torch.zeros(1, 4)).sum()) == 0


# --------------------------------------------------------------------------- decode / regions


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tau,td,T", [(10.0, 0.0, 32), (3.0, 1.5, 8), (0.9, -1.0, 2)])
def test_decode_gives_kernel_value_and_zero_without_spike(dtype, tau, td, T):
    tau_t, td_t = _params(tau, td, dtype)
    kern = kernel_table(tau_t, td_t, T)
    t = torch.arange(T + 1).flip(0).reshape(1, -1).repeat(2, 1)  # any shape, any order
    x = decode(t, kern)
    assert x.shape == t.shape and x.dtype == dtype
    expected = ref_kernel(tau, td, T) + [0.0]
    for row in range(2):
        for j, tj in enumerate(t[row].tolist()):
            if tj == T:
                assert float(x[row, j]) == 0.0
            else:
                assert float(x[row, j]) == pytest.approx(expected[tj], rel=REL_TOL[dtype])


def test_decode_is_differentiable_in_kernel():
    tau = torch.tensor(5.0, dtype=torch.float64, requires_grad=True)
    kern = kernel_table(tau, torch.tensor(0.0, dtype=torch.float64), 4)
    x = decode(torch.tensor([1, 4, 1, 3]), kern)
    x.sum().backward()
    # d/dtau [2*exp(-1/tau) + exp(-3/tau)]
    expected = 2 * math.exp(-1 / 5) * 1 / 25 + math.exp(-3 / 5) * 3 / 25
    assert tau.grad.item() == pytest.approx(expected, rel=1e-12)


@settings(deadline=None, max_examples=100)
@given(tau=st.floats(0.5, 50.0), td=st.floats(-10.0, 10.0), T=st.integers(2, 64),
       theta0=st.floats(0.2, 3.0),
       extra=st.lists(st.floats(-10.0, 10.0, allow_nan=False), max_size=30))
@pytest.mark.parametrize("quantizer", list(SHIFTS))
def test_spike_regions(tau, td, T, theta0, extra, quantizer):
    dtype = torch.float64
    tau_t, td_t = _params(tau, td, dtype)
    thr = threshold_table(tau_t, td_t, T, theta0, quantizer)
    shift = SHIFTS[quantizer]
    up = torch.nextafter(thr, torch.full_like(thr, math.inf))
    down = torch.nextafter(thr, torch.full_like(thr, -math.inf))
    u = torch.cat([thr, up, down, torch.tensor([0.0, -0.0, -3.0, 1e9] + extra, dtype=dtype)])
    t = encode(u, thr)
    regions = spike_regions(t, T)
    clipped, quantized, pruned = regions["clipped"], regions["quantized"], regions["pruned"]
    # the three masks partition the neurons
    assert bool(((clipped.int() + quantized.int() + pruned.int()) == 1).all())
    top = float(thr[0])
    floor = float(thr[-1])
    # theta0 * x_max (ceil) or theta0 * kappa(1/2) (round); the floor likewise
    assert top == pytest.approx(theta0 * math.exp(-(shift - td) / tau), rel=1e-12)
    assert floor == pytest.approx(theta0 * math.exp(-(T - 1 + shift - td) / tau), rel=1e-12)
    values = u.tolist()
    assert clipped.tolist() == [v >= top for v in values]
    assert pruned.tolist() == [v < floor for v in values]
    assert quantized.tolist() == [floor <= v < top for v in values]
    assert all(p for v, p in zip(values, pruned.tolist()) if v <= 0)
    assert (t[clipped] == 0).all() and (t[pruned] == T).all()
    assert bool(((t[quantized] >= 1) & (t[quantized] <= T - 1)).all())


def test_spike_regions_from_raw_times():
    r = spike_regions(torch.tensor([0, 1, 4, 5]), 5)
    assert r["clipped"].tolist() == [True, False, False, False]
    assert r["quantized"].tolist() == [False, True, True, False]
    assert r["pruned"].tolist() == [False, False, False, True]


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("T", [2, 3, 32, 1000])
def test_check_window_accepts(T):
    assert check_window(T) == T


@pytest.mark.parametrize("T", [1, 0, -5, 2.0, 32.0, "32", None, True, False])
def test_check_window_rejects(T):
    with pytest.raises(ConfigError):
        check_window(T)


@pytest.mark.parametrize("T", [1, 0, 2.5])
def test_tables_reject_bad_window(T):
    with pytest.raises(ConfigError):
        kernel_table(10.0, 0.0, T)
    with pytest.raises(ConfigError):
        threshold_table(10.0, 0.0, T, 1.0)


def test_check_kernel_values_accepts():
    check_kernel_values(10.0, 0.0, 1.0)
    check_kernel_values(0.01, -5.0, 0.2)
    check_kernel_values(3.0, 2.0)


@pytest.mark.parametrize("tau,td,theta0", [
    (0.0, 0.0, 1.0), (-1.0, 0.0, 1.0), (10.0, 0.0, 0.0), (10.0, 0.0, -0.5),
    (float("nan"), 0.0, 1.0), (10.0, float("nan"), 1.0), (10.0, 0.0, float("nan")),
    (float("inf"), 0.0, 1.0), (10.0, float("-inf"), 1.0), (10.0, 0.0, float("inf")),
])
def test_check_kernel_values_rejects(tau, td, theta0):
    with pytest.raises(ConfigError):
        check_kernel_values(tau, td, theta0)


@pytest.mark.parametrize("quantizer", ["ceil", "round"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tables_in_one_go_are_the_two_tables_bit_for_bit(quantizer, dtype):
    tau, td = torch.tensor(7.3, dtype=dtype), torch.tensor(0.4, dtype=dtype)
    thresholds, kernel = tables(tau, td, 32, 0.9, quantizer)
    assert torch.equal(thresholds, threshold_table(tau, td, 32, 0.9, quantizer))
    assert torch.equal(kernel, kernel_table(tau, td, 32))
