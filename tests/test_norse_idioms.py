"""The Norse idioms ``LIFCell``'s own tests check, run against ``tnorse.TTFSCell``.

Modelled on Norse's ``norse/torch/module/test/test_lif.py`` and
``norse/torch/functional/test/test_lif.py`` (state shapes and types, ``state=None``, the
``SNNCell`` activation contract, float parameters, bool / sparse inputs, ``Lift``,
``SequentialState``, gradients through time), with TTFS semantics.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

pytest.importorskip("norse")

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", category=FutureWarning)
    from norse.torch import Lift, SequentialState  # noqa: E402
    from norse.torch.module.lif import LIFCell  # noqa: E402
    from norse.torch.module.snn import SNNCell  # noqa: E402

from ttfs_plugin import norse as tnorse  # noqa: E402
from ttfs_plugin.errors import ConfigError, InputShapeError  # noqa: E402
from ttfs_plugin.kernel import encode, threshold_table  # noqa: E402
from ttfs_plugin.models import mlp  # noqa: E402
from ttfs_plugin.timestep import step_tensor  # noqa: E402

T = 6


def impulse(x, steps):
    return [x if s == 0 else torch.zeros_like(x) for s in range(steps)]


def run_cell(call, x, steps=2 * T, state=None):
    """Step ``call(x_t, state)`` over an impulse input; return (spikes per step, states)."""
    spikes, states = [], []
    for x_t in impulse(x, steps):
        out, state = call(x_t, state)
        spikes.append(out)
        states.append(state)
    return spikes, states


def assert_same_state(a, b):
    assert type(a) is type(b)
    for fa, fb in zip(a, b):
        assert torch.equal(fa, fb)


# --- state ---------------------------------------------------------------------------------------

def test_state_fields_are_tensors_after_every_call():
    cell = tnorse.TTFSCell(0, T=T, tau=3.0)
    x = torch.rand(5, 4) * 1.5
    spikes, states = run_cell(cell, x)
    for step, (spk, state) in enumerate(zip(spikes, states), start=1):
        assert isinstance(state, tnorse.TTFSState)
        assert all(isinstance(f, torch.Tensor) for f in state)
        assert state.mem.shape == state.fired.shape == spk.shape == (5, 4)
        assert state.mem.dtype == torch.float32 and state.fired.dtype == torch.bool
        assert state.step.dtype == torch.long and state.step.dim() == 0
        assert int(state.step) == step
    assert torch.equal(states[-1].fired, x >= cell.firing_floor())


def test_state_none_starts_a_run():
    cell = tnorse.TTFSCell(0, T=T)
    x = torch.rand(3, 2)
    out, state = cell(x)  # state defaults to None
    out2, state2 = cell(x, None)
    assert_same_state(state, state2)
    assert torch.equal(state.mem, x) and int(state.step) == 1 and not state.fired.any()
    assert not out.any() and torch.equal(out, out2)


def test_state_of_another_batch_size_is_refused_by_the_cell():
    cell = tnorse.TTFSCell(0, T=T)
    _, state = cell(torch.rand(3, 4))
    with pytest.raises(InputShapeError, match=r"\(3, 4\).*\(5, 4\)") as info:
        cell(torch.zeros(5, 4), state)
    assert isinstance(info.value, ValueError)
    _, state1 = cell(torch.rand(1, 4))
    with pytest.raises(InputShapeError):  # not broadcast either
        cell(torch.zeros(4, 4), state1)
    idle = tnorse.TTFSCell(2, T=T)  # an idle step checks too
    _, state = idle(torch.zeros(3, 4))
    with pytest.raises(InputShapeError):
        idle(torch.zeros(5, 4), state)


def test_state_of_another_batch_size_is_refused_by_the_functional_step():
    p = tnorse.TTFSCell(1, T=T).p
    _, state1 = tnorse.ttfs_feed_forward_step(torch.zeros(1, 4), None, p)
    with pytest.raises(InputShapeError):
        tnorse.ttfs_feed_forward_step(torch.zeros(3, 4), state1._replace(step=step_tensor(T)),
                                      p)
    _, state3 = tnorse.ttfs_feed_forward_step(torch.zeros(3, 4), None, p)
    with pytest.raises(InputShapeError):
        tnorse.ttfs_feed_forward_step(torch.zeros(5, 4), state3, p)  # idle step


# --- the SNNCell contract ----------------------------------------------------------------------

def test_norse_snncell_forward_equals_the_cell_over_a_whole_run():
    for layer in (0, 1):
        cell = tnorse.TTFSCell(layer, T=T, tau=3.0, td=0.5)
        x = torch.rand(4, 5) * 1.5
        steps = (layer + 2) * T
        inputs = [x if s == layer * T else torch.zeros_like(x) for s in range(steps)]
        s_own = s_norse = None
        total = torch.zeros_like(x)
        for x_t in inputs:
            out_own, s_own = cell(x_t, s_own)
            out_norse, s_norse = SNNCell.forward(cell, x_t, s_norse)
            assert torch.equal(out_own, out_norse)
            assert_same_state(s_own, s_norse)
            total += out_own
        assert torch.equal(total, (x >= cell.firing_floor()).float()) and total.sum() > 0


def test_feed_forward_step_takes_the_activation_contract_and_refuses_other_dt():
    cell = tnorse.TTFSCell(0, T=T, tau=3.0)
    x = torch.rand(3, 4) * 1.5
    spk_f, st_f = run_cell(lambda x_t, s: tnorse.ttfs_feed_forward_step(x_t, s, cell.p, 1.0), x)
    spk_c, st_c = run_cell(cell, x)
    for a, b in zip(spk_f, spk_c):
        assert torch.equal(a, b)
    assert_same_state(st_f[-1], st_c[-1])
    assert cell.dt == 1.0
    for dt in (0.001, 2.0):
        with pytest.raises(ConfigError, match="dt"):
            tnorse.ttfs_feed_forward_step(x, None, cell.p, dt)


def test_parameters_from_plain_floats_equal_the_tensor_version():
    floats = tnorse.TTFSParameters(0, 8, 3.0, 0.5)
    tensors = tnorse.TTFSParameters(0, 8, torch.tensor(3.0), torch.tensor(0.5))
    u = torch.cat([torch.linspace(-0.5, 2.0, 30), threshold_table(3.0, 0.5, 8)])
    run_f = run_cell(lambda x_t, s: tnorse.ttfs_feed_forward_step(x_t, s, floats), u, 16)
    run_t = run_cell(lambda x_t, s: tnorse.ttfs_feed_forward_step(x_t, s, tensors), u, 16)
    for a, b in zip(run_f[0], run_t[0]):
        assert torch.equal(a, b)
    assert_same_state(run_f[1][-1], run_t[1][-1])
    fired = torch.stack(run_f[0][8:]).bool()
    times = torch.where(fired.any(0), fired.float().argmax(0), torch.tensor(8))
    assert torch.equal(times, encode(u, threshold_table(3.0, 0.5, 8)))


# --- input types -------------------------------------------------------------------------------

def _typed_inputs(x):
    return {"bool": x.bool(), "int": x.long(), "sparse": x.to_sparse(),
            "sparse-bool": x.bool().to_sparse()}


def _run_at(call, x, at, steps):
    """Like :func:`run_cell`, with the input at step ``at`` (a layer's integration window)."""
    spikes, states, state = [], [], None
    for s in range(steps):
        out, state = call(x if s == at else torch.zeros_like(x), state)
        spikes.append(out)
        states.append(state)
    return spikes, states


def _check_typed(call, x, kind, at=0, steps=2 * T):
    ref_spikes, ref_states = _run_at(call, x.float(), at, steps)
    spikes, states = _run_at(call, _typed_inputs(x)[kind], at, steps)
    for a, b in zip(spikes, ref_spikes):
        assert a.layout == torch.strided and a.dtype == torch.float32 and torch.equal(a, b)
    for s in states:
        assert s.mem.layout == torch.strided and s.mem.dtype == torch.float32
    assert_same_state(states[-1], ref_states[-1])
    assert torch.stack(ref_spikes).sum() > 0


X01 = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 1.0, 0.0, 0.0]])
KINDS = ["bool", "int", "sparse", "sparse-bool"]


@pytest.mark.parametrize("kind", KINDS)
def test_bool_int_and_sparse_inputs_through_the_cell(kind):
    _check_typed(tnorse.TTFSCell(0, T=T), X01, kind)


@pytest.mark.parametrize("kind", KINDS)
def test_bool_int_and_sparse_inputs_through_the_functional_step(kind):
    p = tnorse.TTFSCell(0, T=T).p
    _check_typed(lambda x_t, s: tnorse.ttfs_feed_forward_step(x_t, s, p), X01, kind)


def test_bool_int_and_sparse_inputs_of_layer_0_through_norse_snncell_forward():
    cell = tnorse.TTFSCell(0, T=T)
    for kind in ("bool", "int"):
        _check_typed(lambda x_t, s: SNNCell.forward(cell, x_t, s), X01, kind)


def test_sparse_input_of_layer_0_through_norse_snncell_forward():
    cell = tnorse.TTFSCell(0, T=T)
    _check_typed(lambda x_t, s: SNNCell.forward(cell, x_t, s), X01, "sparse")


@pytest.mark.parametrize("kind", ["bool", "int", "sparse"])
def test_bool_int_and_sparse_inputs_of_layer_1_through_norse_snncell_forward(kind):
    cell = tnorse.TTFSCell(1, T=T)
    _check_typed(lambda x_t, s: SNNCell.forward(cell, x_t, s), X01, kind, at=T, steps=3 * T)


def test_typed_inputs_of_layer_1_through_the_cell():
    cell = tnorse.TTFSCell(1, T=T)
    for kind in KINDS:
        _check_typed(cell, X01, kind, at=T, steps=3 * T)


# --- Norse containers ----------------------------------------------------------------------------

def _converted(T_=4, seed=0):
    torch.manual_seed(seed)
    return tnorse.to_norse(mlp(hidden=(8,), T=T_).eval())


def test_lift_over_an_impulse_train_gives_the_simulated_logits():
    net = _converted()
    x = torch.rand(3, 1, 8, 8)
    steps = tnorse.num_steps(net)
    train = tnorse.impulse_train(x, steps)
    assert train.shape == (steps, 3, 1, 8, 8) and torch.equal(train[0], x) and not train[1:].any()
    lifted = Lift(net)
    assert lifted.is_stateful
    with torch.no_grad():
        outs, state = lifted(train)
        result = tnorse.simulate(net, x)
    assert outs.shape == (steps, 3, 10)
    assert torch.equal(outs[-1], result.logits)
    assert isinstance(state, list) and int(state[0].step) == steps
    assert result.logits.abs().sum() > 0


def test_sequential_state_threads_the_state_of_every_module():
    c0 = tnorse.TTFSCell(0, T=T, tau=4.0)
    c1 = tnorse.TTFSCell(1, T=T, tau=4.0)
    net = SequentialState(c0, tnorse.TemporalKernelSynapse(c0.kernel, 0, nn.Linear(5, 4)), c1,
                          tnorse.TemporalKernelSynapse(c1.kernel, 1, nn.Linear(4, 3)),
                          tnorse.ReadoutIntegrator(2))
    assert all(net.stateful_layers)
    x = torch.rand(2, 5) * 2
    state = None
    with torch.no_grad():
        for step, x_t in enumerate(impulse(x, tnorse.num_steps(net)), start=1):
            out, state = net(x_t, state)
            assert len(state) == 5
            assert int(state[0].step) == int(state[1].step) == int(state[2].step) == step
            assert int(state[3].step) == step
        result = tnorse.simulate(net, x)
    assert isinstance(state[2], tnorse.TTFSState) and isinstance(state[4], tnorse.ReadoutState)
    assert state[4].mem is out and torch.equal(out, result.logits)
    # the next run, from state=None, does not see the old one
    with torch.no_grad():
        again, _ = run_cell(net, x, tnorse.num_steps(net))
    assert torch.equal(again[-1], out)


def test_cell_parameters_register_unlike_norse_lifcell():
    assert list(LIFCell().parameters()) == []  # Norse keeps its p as a plain tuple
    cell = tnorse.TTFSCell(1, T=T, tau=5.0, td=1.0)
    params = list(cell.parameters())
    assert any(p is cell.kernel.tau for p in params) and any(p is cell.kernel.td for p in params)
    assert {"kernel.tau", "kernel.td"} <= set(cell.state_dict())
    cell.to(torch.float64)
    assert cell.kernel.tau.dtype == torch.float64 and cell.p.tau.dtype == torch.float64
    out, state = cell(torch.zeros(2, 3), None)
    assert state.mem.dtype == torch.float64
    fresh = tnorse.TTFSCell(1, T=T).to(torch.float64)
    fresh.load_state_dict(cell.state_dict())
    assert fresh.kernel.tau.item() == 5.0 and fresh.kernel.td.item() == 1.0


# --- gradients -------------------------------------------------------------------------------

def _native(method="super", seed=0):
    torch.manual_seed(seed)
    c0 = tnorse.TTFSCell(0, T=T, tau=4.0, method=method)
    c1 = tnorse.TTFSCell(1, T=T, tau=4.0, method=method)
    return SequentialState(c0, tnorse.TemporalKernelSynapse(c0.kernel, 0, nn.Linear(6, 8)), c1,
                           tnorse.TemporalKernelSynapse(c1.kernel, 1, nn.Linear(8, 3)),
                           tnorse.ReadoutIntegrator(2))


def test_gradients_flow_to_the_kernel_parameters_through_time():
    net = _native()
    x = torch.rand(16, 6) * 1.5
    y = torch.randint(0, 3, (16,))
    nn.functional.cross_entropy(tnorse.simulate(net, x).logits, y).backward()
    for cell in (net[0], net[2]):
        for p in (cell.kernel.tau, cell.kernel.td):
            assert p.grad is not None and torch.isfinite(p.grad) and p.grad != 0
    assert net[1].op.weight.grad.abs().sum() > 0 and net[3].bias.grad.abs().sum() > 0


def test_norse_surrogate_method_changes_the_backward_pass_only():
    x = torch.rand(16, 6) * 1.5
    grads, logits = {}, {}
    for method in ("super", "tanh", "triangle"):
        net = _native(method)
        result = tnorse.simulate(net, x)
        logits[method] = result.logits.detach()
        result.logits.sum().backward()
        grads[method] = net[1].op.weight.grad.clone()
        assert net[2].method == method and net[2].p.method == method
    assert torch.equal(logits["super"], logits["tanh"])
    assert torch.equal(logits["super"], logits["triangle"])
    assert not torch.allclose(grads["super"], grads["tanh"])
    assert not torch.allclose(grads["super"], grads["triangle"])


def test_single_spike_gradient_is_the_chosen_norse_surrogate():
    thr0 = threshold_table(10.0, 0.0, 4)[0].item()
    mem = torch.tensor([thr0, thr0 - 0.05, thr0 + 0.02], requires_grad=True)
    state = tnorse.TTFSState(mem, torch.zeros(3, dtype=torch.bool), step_tensor(4))
    p = tnorse.TTFSParameters(0, 4, 10.0, 0.0, method="tanh", alpha=10.0)
    spikes, _ = tnorse.ttfs_feed_forward_step(torch.zeros(3), state, p)
    assert spikes.tolist() == [1.0, 0.0, 1.0]
    spikes.sum().backward()
    v = (mem - thr0).detach()
    torch.testing.assert_close(mem.grad, 1 - torch.tanh(10.0 * v) ** 2)
    with pytest.raises(ValueError, match="no such"):
        bad = p._replace(method="nonsense")
        tnorse.ttfs_feed_forward_step(torch.zeros(3), state, bad)
