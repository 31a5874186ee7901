"""The fast exact simulation path against the step-by-step reference rules it replaces.

Spike times computed once per fire window, pooled once per window, read by the recorder, and
cached kernel / threshold tables must give the reference's spikes and logits bit for bit
(:func:`ttfs_plugin.timestep.reference_path` runs the reference); the opt-in window-batched
synapse must give the same spike times and predictions in float64.
"""

import pytest
import torch
from torch import nn

pytest.importorskip("snntorch")
pytest.importorskip("norse")

from _model_helpers import SIM_NETS as NETS  # noqa: E402
from _model_helpers import assert_same_result  # noqa: E402
from _model_helpers import build_sim_net as build  # noqa: E402

from ttfs_plugin import norse as tnorse  # noqa: E402
from ttfs_plugin import snntorch as tsnn  # noqa: E402
from ttfs_plugin.layers import TemporalKernel  # noqa: E402
from ttfs_plugin.simulation import agreement, surrogate_spike_times  # noqa: E402
from ttfs_plugin.timestep import (  # noqa: E402
    NeuronState,
    is_silent,
    reference_path,
    spike_times_of,
    step_tensor,
)

ADAPTERS = {"snntorch": (tsnn, tsnn.to_snntorch), "norse": (tnorse, tnorse.to_norse)}

def simulate_both(adapter, net, x):
    with torch.no_grad():
        with reference_path():
            ref = adapter.simulate(net, x)
        fast = adapter.simulate(net, x)
    return ref, fast


@pytest.mark.parametrize("backend", list(ADAPTERS))
@pytest.mark.parametrize("quantizer", ["ceil", "round"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", list(NETS))
def test_fast_path_equals_the_reference_bit_for_bit(name, dtype, quantizer, backend):
    adapter, convert = ADAPTERS[backend]
    model, x = build(name, quantizer, dtype)
    net = convert(model)
    ref, fast = simulate_both(adapter, net, x)
    assert_same_result(ref, fast)
    assert sum(int(c.sum()) for c in fast.spike_counts.values()) > 0
    if dtype == torch.float64:  # and both are the surrogate's
        logits, times = surrogate_spike_times(model, x)
        assert agreement(fast, logits, times) == {"agreement_with_surrogate": 1.0,
                                                  "spike_time_agreement": 1.0}


def test_the_fast_path_is_taken_and_the_reference_is_not():
    model, x = build("cnn-max", "ceil", torch.float32)
    net = tsnn.to_snntorch(model)
    seen = []
    net.ttfs1.register_forward_hook(lambda m, i, o: seen.append(spike_times_of(o) is not None))
    steps = tsnn.num_steps(net)
    with torch.no_grad():
        tsnn.simulate(net, x)
        fast = list(seen)
        seen.clear()
        with reference_path():
            tsnn.simulate(net, x)
    T = net.ttfs1.kernel.T
    assert fast == [2 * T <= g < 3 * T for g in range(steps)]  # tagged in its fire window
    assert not any(seen)


def test_hand_loops_and_spiking_output_equal_the_reference():
    model, x = build("mlp", "round", torch.float64)
    for adapter, convert in ADAPTERS.values():
        net = convert(model, output="spikes")
        ref, fast = simulate_both(adapter, net, x)
        assert_same_result(ref, fast)
    net = tsnn.to_snntorch(model)  # the snnTorch user's own loop, returning every output

    def loop():
        tsnn.reset(net)
        return [net(x if s == 0 else torch.zeros_like(x)) for s in range(tsnn.num_steps(net))]
    with torch.no_grad():
        with reference_path():
            ref_outs = loop()
        outs = loop()
    assert all(torch.equal(a, b) for a, b in zip(ref_outs, outs))


def test_spike_train_input_equals_the_reference():
    model, x = build("mlp", "ceil", torch.float32)
    for adapter, convert in ADAPTERS.values():
        net = convert(model, input_mode="spikes")
        ref, fast = simulate_both(adapter, net, adapter.input_spike_train(x, net))
        assert_same_result(ref, fast)


# --- a single neuron: thresholds hit exactly, NaN, inf, states built by hand ------------------

def run_neuron(neuron, current, T, state=None, start=None):
    """Feed ``current`` at the first step of window 1 (layer 1 integrates there); return the
    spikes and states of the fire window's steps (window 2)."""
    start = T if start is None else start
    if state is None:
        state = NeuronState(torch.zeros_like(current), torch.zeros_like(current, dtype=torch.bool),
                            step_tensor(start))
    spikes, states = [], []
    for g in range(start, 3 * T):
        spk, state = neuron(current if g == T else torch.zeros_like(current), state)
        if g >= 2 * T:
            spikes.append(spk)
            states.append(state)
    return spikes, states


@pytest.mark.parametrize("quantizer", ["ceil", "round"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_membranes_on_the_thresholds_nan_and_inf(dtype, quantizer):
    T = 8
    cell = tnorse.TTFSCell(1, T=T, tau=3.0, td=0.25, quantizer=quantizer).to(dtype)
    thr = cell.kernel.thresholds().detach()
    below = torch.nextafter(thr, torch.zeros_like(thr))
    above = torch.nextafter(thr, torch.full_like(thr, 10.0))
    special = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0, -1.0, 1e30,
                            torch.finfo(dtype).tiny], dtype=dtype)
    current = torch.cat([thr, below, above, special]).repeat(2, 1)
    with torch.no_grad():
        with reference_path():
            ref_spk, ref_states = run_neuron(cell, current, T)
        spk, states = run_neuron(cell, current, T)
    for a, b, sa, sb in zip(ref_spk, spk, ref_states, states):
        assert a.dtype == b.dtype and torch.equal(a, b)
        assert torch.equal(sa.fired, sb.fired)
        torch.testing.assert_close(sa.mem, sb.mem, rtol=0, atol=0, equal_nan=True)
        assert int(sa.step) == int(sb.step)
    fired_at = torch.stack(spk).argmax(0)
    assert torch.equal(fired_at[0, :T], torch.arange(T))  # exactly on thr[k]: fires at k
    assert not torch.stack(spk)[:, :, 3 * T].any()  # NaN never fires
    assert torch.stack(spk)[0, :, 3 * T + 1].all()  # inf fires at once


def test_a_state_built_by_hand_in_the_middle_of_the_fire_window():
    T = 8
    cell = tnorse.TTFSCell(1, T=T, tau=3.0)
    mem = torch.rand(3, 20) * 1.2
    fired = torch.rand(3, 20) < 0.3  # some fired already (whatever the membrane says)
    state = NeuronState(mem, fired, step_tensor(2 * T + 3))
    with torch.no_grad():
        with reference_path():
            ref_spk, ref_states = run_neuron(cell, torch.zeros(3, 20), T, state, 2 * T + 3)
        spk, states = run_neuron(cell, torch.zeros(3, 20), T, state, 2 * T + 3)
        # a state edited between steps is read as given, not from the kept spike times
        edited = states[0]._replace(fired=torch.zeros_like(fired))
        with reference_path():
            ref_next, ref_edited = cell(torch.zeros(3, 20), edited)
        nxt, next_state = cell(torch.zeros(3, 20), edited)
    for a, b, sa, sb in zip(ref_spk, spk, ref_states, states):
        assert torch.equal(a, b) and torch.equal(sa.fired, sb.fired)
    assert torch.equal(ref_next, nxt) and torch.equal(ref_edited.fired, next_state.fired)
    assert nxt.sum() > 0


def test_gradients_keep_the_reference_rule():
    neuron = tsnn.TTFSNeuron(1, T=4, tau=2.0)
    mem = torch.rand(2, 5, requires_grad=True) * 2
    spk, _ = neuron(torch.zeros(2, 5), NeuronState(mem, torch.zeros(2, 5, dtype=torch.bool),
                                                   step_tensor(8)))
    assert spike_times_of(spk) is None and spk.grad_fn is not None


# --- cached tables --------------------------------------------------------------------------

def edit_kernels(net, tau=0.7, td=0.2):
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, TemporalKernel):  # (no relay in the nets this is used on)
                m.tau.mul_(tau)
                m.td.add_(td)


@pytest.mark.parametrize("backend", list(ADAPTERS))
def test_tables_follow_load_state_dict_and_parameter_edits(backend):
    adapter, convert = ADAPTERS[backend]
    model, x = build("cnn-max", "ceil", torch.float64)
    net = convert(model)
    with torch.no_grad():
        before = adapter.simulate(net, x)  # fills the caches
        other = convert(model)
        edit_kernels(other)
        net.load_state_dict(other.state_dict())
        after = adapter.simulate(net, x)
        with reference_path():
            expected = adapter.simulate(other, x)
    assert_same_result(after, expected)
    assert not torch.equal(after.logits, before.logits)
    with torch.no_grad():  # an in-place edit
        edit_kernels(net, tau=1.3, td=-0.1)
        edited = adapter.simulate(net, x)
        with reference_path():
            assert_same_result(edited, adapter.simulate(net, x))
    for m in net.modules():  # through .data, which no version counter sees (p.data.clamp_())
        if isinstance(m, TemporalKernel):
            m.tau.data.mul_(0.8)
            m.td.data.add_(0.05)
    with torch.no_grad():
        by_data = adapter.simulate(net, x)
        looped = adapter.simulate(net, x, native_loop=True)
        with reference_path():
            expected = adapter.simulate(net, x)
    assert_same_result(by_data, expected)
    assert_same_result(looped, expected)
    assert not torch.equal(by_data.logits, edited.logits)
    neuron = next(m for m in net.modules() if getattr(m, "layer_index", None) == 2
                  and hasattr(m, "kernel") and not hasattr(m, "source_index"))
    neuron.kernel.theta0 = 0.8  # a plain attribute: part of the key too
    with torch.no_grad():
        changed = adapter.simulate(net, x)
        with reference_path():
            assert_same_result(changed, adapter.simulate(net, x))
    neuron.kernel.tau = nn.Parameter(neuron.kernel.tau.detach() + 1.0)  # a new parameter
    with torch.no_grad():
        replaced = adapter.simulate(net, x)
        with reference_path():
            assert_same_result(replaced, adapter.simulate(net, x))


def test_tables_follow_a_dtype_change_and_are_built_once_per_run():
    model, x = build("mlp", "round", torch.float32)
    net = tsnn.to_snntorch(model)
    calls = {"thresholds": 0, "kernel": 0}
    for m in net.modules():
        if isinstance(m, TemporalKernel):
            for which in calls:
                original = getattr(m, which)

                def counted(original=original, which=which):
                    calls[which] += 1
                    return original()
                setattr(m, which, counted)
    with torch.no_grad():
        tsnn.simulate(net, x)
        once = dict(calls)
        tsnn.simulate(net, x)
    kernels = {id(m.kernel) for m in net.modules() if hasattr(m, "kernel")}
    assert once["thresholds"] <= len(kernels) and once["kernel"] <= len(kernels)
    assert calls == once  # the second run builds nothing
    net.double()
    with torch.no_grad():
        result = tsnn.simulate(net, x.double())
        with reference_path():
            assert_same_result(result, tsnn.simulate(net, x.double()))
    assert result.logits.dtype == torch.float64


def test_training_through_time_builds_tables_with_gradients():
    model, x = build("mlp", "ceil", torch.float32)
    net = tsnn.to_snntorch(model)
    result = tsnn.simulate(net, x)  # autograd on: the reference rule, differentiable tables
    result.logits.sum().backward()
    assert net.ttfs1.kernel.tau.grad is not None and net.ttfs1.kernel.tau.grad != 0


# --- idle modules ---------------------------------------------------------------------------

def test_idle_modules_return_their_cached_silent_output_and_build_nothing():
    cell = tnorse.TTFSCell(3, T=4)
    syn = tnorse.TemporalKernelSynapse(cell.kernel, 3, nn.Linear(5, 2))

    def refuse():
        raise AssertionError("an idle module built a table")
    cell.kernel.thresholds = refuse
    cell.kernel.kernel = refuse
    x = torch.ones(3, 5)
    out, state = cell(x, None)
    cur, s = syn(out, None)
    for _ in range(10):  # windows 0 … 2: idle for layer 3 and its synapse
        out2, state = cell(x, state)
        cur2, s = syn(out2, s)
        assert out2 is out and cur2 is cur and is_silent(out2) and is_silent(cur2)
    assert int(state.step) == int(s.step) == 11
    assert state.mem.sum() == 0  # no input taken outside its integration window


# --- the window-batched synapse -------------------------------------------------------------

@pytest.mark.parametrize("backend", list(ADAPTERS))
@pytest.mark.parametrize("quantizer", ["ceil", "round"])
@pytest.mark.parametrize("name", list(NETS))
def test_window_batched_gives_the_exact_spike_times_and_predictions_in_float64(name, quantizer,
                                                                              backend):
    adapter, convert = ADAPTERS[backend]
    model, x = build(name, quantizer, torch.float64)
    with torch.no_grad():
        exact = adapter.simulate(convert(model), x)
        batched = adapter.simulate(convert(model, window_batched=True), x)
        logits, times = surrogate_spike_times(model, x)
    for layer in exact.spike_times:
        assert torch.equal(batched.spike_times[layer], exact.spike_times[layer]), layer
    assert torch.equal(batched.logits.argmax(1), exact.logits.argmax(1))
    torch.testing.assert_close(batched.logits, exact.logits, rtol=0, atol=1e-12)
    assert agreement(batched, logits, times) == {"agreement_with_surrogate": 1.0,
                                                 "spike_time_agreement": 1.0}


def test_window_batched_agreement_in_float32():
    model, x = build("cnn-max", "ceil", torch.float32)
    with torch.no_grad():
        exact = tsnn.simulate(tsnn.to_snntorch(model), x)
        batched = tsnn.simulate(tsnn.to_snntorch(model, window_batched=True), x)
    same = sum(int((batched.spike_times[n] == t).sum()) for n, t in exact.spike_times.items())
    total = sum(t.numel() for t in exact.spike_times.values())
    assert same / total >= 0.999
    assert (batched.logits.argmax(1) == exact.logits.argmax(1)).float().mean() >= 0.75
    torch.testing.assert_close(batched.logits, exact.logits, rtol=1e-4, atol=1e-4)


def test_window_batched_membrane_moves_only_at_the_windows_end_and_is_opt_in():
    model, x = build("mlp", "ceil", torch.float64)
    net = tsnn.to_snntorch(model, window_batched=True)
    assert not any(getattr(m, "window_batched", False) for m in tsnn.to_snntorch(model).modules())
    assert "window_batched=True" in repr(net)
    T = net.ttfs1.kernel.T
    tsnn.reset(net)
    traces = []
    with torch.no_grad():
        for g in range(tsnn.num_steps(net)):
            net(x if g == 0 else torch.zeros_like(x))
            if T <= g < 2 * T:  # layer 1 integrates
                traces.append(net.ttfs1.state.mem.clone())
    assert all(not t.any() for t in traces[:-1]) and traces[-1].any()


def test_window_batched_with_spikes_that_carry_no_times_and_under_autograd():
    model, x = build("mlp", "round", torch.float64)
    exact = tsnn.simulate(tsnn.to_snntorch(model), x)
    batched_net = tsnn.to_snntorch(model, window_batched=True)
    with torch.no_grad(), reference_path():  # spikes without times: accumulated per step
        plain = tsnn.simulate(batched_net, x)
    graded = tsnn.simulate(batched_net, x)  # autograd on: reference neurons, still batched
    for result in (plain, graded):
        assert torch.equal(result.logits.argmax(1), exact.logits.argmax(1))
        torch.testing.assert_close(result.logits, exact.logits, rtol=0, atol=1e-12)
    graded.logits.sum().backward()
    assert batched_net.ttfs1.kernel.tau.grad is not None


def test_window_batched_save_and_load(tmp_path):
    model, x = build("mlp", "ceil", torch.float64)
    for adapter, convert in ADAPTERS.values():
        net = convert(model)
        adapter.save(net, tmp_path / "net.pt")
        again = adapter.load(tmp_path / "net.pt", window_batched=True)
        with torch.no_grad():
            a, b = adapter.simulate(net, x), adapter.simulate(again, x)
        assert all(getattr(m, "window_batched", True) for m in again.modules()
                   if hasattr(m, "source_index"))
        assert torch.equal(a.logits.argmax(1), b.logits.argmax(1))


def test_window_batched_nets_in_the_users_own_loops_give_simulates_logits():
    # The way a snnTorch user steps a net (snntorch.utils.reset, then spk = net(x_t)) and a
    # Norse user steps a SequentialState (out, state = net(x_t, state)): the last output is the
    # logits that simulate() reports, twice in a row (a second run starts cleanly).
    import snntorch.utils

    model, x = build("cnn-max", "ceil", torch.float64)
    zeros = torch.zeros_like(x)
    snn_net = tsnn.to_snntorch(model, window_batched=True)
    norse_net = tnorse.to_norse(model, window_batched=True)
    with torch.no_grad():
        want = tsnn.simulate(tsnn.to_snntorch(model, window_batched=True), x).logits
        for _ in range(2):
            snntorch.utils.reset(snn_net)
            for s in range(tsnn.num_steps(snn_net)):
                out = snn_net(x if s == 0 else zeros)
            assert torch.equal(out, want)
            state = None
            for s in range(tnorse.num_steps(norse_net)):
                out, state = norse_net(x if s == 0 else zeros, state)
            torch.testing.assert_close(out, want, rtol=0, atol=1e-12)
