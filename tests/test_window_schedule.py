"""``simulate`` run window by window against the framework's own per-step loop.

The window schedule (:mod:`ttfs_plugin.window_schedule`) must give the loop's logits and spike
times bit for bit (``native_loop=True`` steps ``net(x_t)`` / ``net(x_t, state)``), and must
step aside — the loop runs — wherever it cannot vouch for that: hooks, autograd, spike-train
input, the reference rules, subclasses, other containers, a partial run.
"""

import pytest
import torch
from torch import nn

pytest.importorskip("snntorch")
pytest.importorskip("norse")

from _model_helpers import SIM_NETS, assert_same_result, build_sim_net  # noqa: E402

from ttfs_plugin import norse as tnorse  # noqa: E402
from ttfs_plugin import snntorch as tsnn  # noqa: E402
from ttfs_plugin import window_schedule  # noqa: E402
from ttfs_plugin.errors import InputShapeError  # noqa: E402
from ttfs_plugin.timestep import reference_path  # noqa: E402

ADAPTERS = {"snntorch": (tsnn, tsnn.to_snntorch), "norse": (tnorse, tnorse.to_norse)}


@pytest.fixture
def schedule_runs(monkeypatch):
    """The number of runs the window schedule answered (not handed back to the loop)."""
    answered = []
    original = window_schedule.run

    def counting(*args, **kwargs):
        result = original(*args, **kwargs)
        answered.append(result is not None)
        return result
    monkeypatch.setattr(window_schedule, "run", counting)
    return answered


def both(adapter, net, x, **kwargs):
    with torch.no_grad():
        by_windows = adapter.simulate(net, x, **kwargs)
        loop = adapter.simulate(net, x, native_loop=True, **kwargs)
    return by_windows, loop


def assert_same_run(a, b):
    assert_same_result(a, b)
    assert (a.T, a.steps, a.neurons, a.output_layer, a.input_layer) == \
        (b.T, b.steps, b.neurons, b.output_layer, b.input_layer)
    assert list(a.spike_times) == list(b.spike_times)  # the recorder's order too


@pytest.mark.parametrize("backend", list(ADAPTERS))
@pytest.mark.parametrize("synapse", ["exact", "window-batched"])
@pytest.mark.parametrize("output", ["membrane", "spikes"])
@pytest.mark.parametrize("name", list(SIM_NETS))
def test_the_schedule_gives_the_loops_results_bit_for_bit(name, output, synapse, backend,
                                                          schedule_runs):
    adapter, convert = ADAPTERS[backend]
    model, x = build_sim_net(name, "ceil", torch.float32)
    net = convert(model, output=output, window_batched=synapse == "window-batched")
    by_windows, loop = both(adapter, net, x)
    assert schedule_runs == [True]  # the schedule answered the first, the loop the second
    assert_same_run(by_windows, loop)
    assert sum(int(c.sum()) for c in by_windows.spike_counts.values()) > 0


@pytest.mark.parametrize("backend", list(ADAPTERS))
@pytest.mark.parametrize("quantizer", ["ceil", "round"])
def test_float64_and_the_round_quantizer(backend, quantizer, schedule_runs):
    adapter, convert = ADAPTERS[backend]
    for name in ("cnn-max", "cnn-analog"):
        model, x = build_sim_net(name, quantizer, torch.float64, seed=3)
        for batched in (False, True):
            by_windows, loop = both(adapter, convert(model, window_batched=batched), x)
            assert_same_run(by_windows, loop)
    assert all(schedule_runs) and len(schedule_runs) == 4


@pytest.mark.parametrize("backend", list(ADAPTERS))
def test_under_autocast(backend, schedule_runs):
    """bf16 weight ops (CPU autocast): their currents are added into the float32 membranes and
    readout as in the loop, not accumulated in bf16."""
    adapter, convert = ADAPTERS[backend]
    model, x = build_sim_net("cnn-max", "ceil", torch.float32)
    for batched in (False, True):
        net = convert(model, window_batched=batched)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            by_windows, loop = both(adapter, net, x)
        assert loop.logits.dtype == torch.float32
        assert_same_run(by_windows, loop)
    assert schedule_runs == [True, True]


def test_inputs_on_the_thresholds_and_at_the_ends_of_the_range(schedule_runs):
    model, _ = build_sim_net("mlp", "ceil", torch.float32)
    net = tsnn.to_snntorch(model)
    thr = net[0].kernel.thresholds().detach()
    values = torch.cat([thr[thr <= 1], torch.nextafter(thr[thr <= 1], torch.zeros(1)),
                        torch.tensor([0.0, 1.0, -0.0])])
    x = values[torch.randint(len(values), (5, 1, 8, 8), generator=torch.Generator()
                             .manual_seed(0))]
    by_windows, loop = both(tsnn, net, x)
    assert schedule_runs == [True]
    assert_same_run(by_windows, loop)


def test_the_weight_ops_see_the_calls_of_the_loop(schedule_runs):
    """Hooks on a synapse's weight op are allowed: it is called as often, on equal inputs."""
    model, x = build_sim_net("cnn-max", "ceil", torch.float32)
    for batched in (False, True):
        net = tsnn.to_snntorch(model, window_batched=batched)
        with torch.no_grad():
            tsnn.simulate(net, x)  # a synapse probes its op once per input shape: not below
        runs: list[dict] = []  # per run: weight op name -> its inputs, in call order
        for name, module in net.named_modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                module.register_forward_hook(
                    lambda m, i, o, name=name, runs=runs:
                    runs[-1].setdefault(name, []).append(i[0].clone()))
        with torch.no_grad():
            for native in (False, True):
                runs.append({})
                tsnn.simulate(net, x, native_loop=native)
        by_windows, loop = runs
        assert by_windows.keys() == loop.keys() and len(loop) == 4
        for name in loop:
            assert len(by_windows[name]) == len(loop[name])
            assert all(torch.equal(a, b) for a, b in zip(by_windows[name], loop[name]))
    assert schedule_runs == [True] * 4


@pytest.mark.parametrize("backend", list(ADAPTERS))
def test_the_loop_runs_where_the_schedule_cannot_vouch_for_it(backend, schedule_runs):
    adapter, convert = ADAPTERS[backend]
    model, x = build_sim_net("cnn-max", "ceil", torch.float32)
    steps = adapter.num_steps(convert(model))

    net = convert(model)  # a forward hook on a neuron expects every step
    seen = []
    neuron = next(m for m in net.modules() if getattr(m, "layer_index", None) == 1
                  and hasattr(m, "is_output"))
    handle = neuron.register_forward_hook(lambda m, i, o: seen.append(1))
    by_windows, loop = both(adapter, net, x)
    assert_same_run(by_windows, loop)
    assert len(seen) == 2 * steps
    handle.remove()

    handle = nn.modules.module.register_module_forward_hook(lambda m, i, o: None)  # global
    try:
        with torch.no_grad():
            adapter.simulate(net, x)
    finally:
        handle.remove()

    with reference_path(), torch.no_grad():
        adapter.simulate(net, x)
    result = adapter.simulate(net, x)  # autograd on: the loop keeps the graph
    assert result.logits.requires_grad

    spiking = convert(model, input_mode="spikes")
    with torch.no_grad():
        adapter.simulate(spiking, adapter.input_spike_train(x, spiking))
        adapter.simulate(net, x, steps=steps - 1)
    assert not any(schedule_runs)  # none of these reached the schedule, or it declined


def test_subclasses_other_containers_and_hidden_outputs_take_the_loop(schedule_runs):
    model, x = build_sim_net("mlp", "ceil", torch.float32)
    net = tsnn.to_snntorch(model)

    class Sequential(nn.Sequential):
        pass
    wrapped = Sequential(*net)
    with torch.no_grad():
        tsnn.simulate(wrapped, x)
    norse_net = tnorse.to_norse(model)
    norse_net.return_hidden = True  # the loop's output is then every module's: as before
    with torch.no_grad():
        assert isinstance(tnorse.simulate(norse_net, x).logits, list)

    class Pool(tsnn.FirstSpikeMaxPool2d):  # a subclass may step otherwise
        pass
    model, x = build_sim_net("cnn-max", "ceil", torch.float32)
    net = tsnn.to_snntorch(model)
    name = next(n for n, m in net.named_children() if isinstance(m, tsnn.FirstSpikeMaxPool2d))
    setattr(net, name, Pool(getattr(net, name).kernel_size))
    with torch.no_grad():
        tsnn.simulate(net, x)
    assert not any(schedule_runs)


def test_tables_the_schedule_cannot_use_hand_back_to_the_loop(monkeypatch, schedule_runs):
    model, x = build_sim_net("cnn-max", "ceil", torch.float32)
    net = tnorse.to_norse(model)
    monkeypatch.setattr(window_schedule, "non_increasing", lambda thresholds: False)
    by_windows, loop = both(tnorse, net, x)
    assert schedule_runs == [False]  # it looked at the tables and declined
    assert_same_run(by_windows, loop)


@pytest.mark.parametrize("backend", list(ADAPTERS))
def test_bad_inputs_get_the_loops_errors(backend):
    adapter, convert = ADAPTERS[backend]
    model, x = build_sim_net("cnn-max", "ceil", torch.float32)
    net = convert(model)
    for bad in (x * 3, x.masked_fill(x > 0.5, float("nan")), x[:, :, :20], x.repeat(1, 2, 1, 1)):
        messages = []
        for native in (False, True):
            with torch.no_grad(), pytest.raises(InputShapeError) as error:
                adapter.simulate(net, bad, native_loop=native)
            messages.append(str(error.value))
        assert messages[0] == messages[1]


def test_the_network_steps_on_natively_after_a_scheduled_run(schedule_runs):
    model, x = build_sim_net("cnn-max", "ceil", torch.float32)
    net = tsnn.to_snntorch(model)
    with torch.no_grad():
        result = tsnn.simulate(net, x)
        assert all(getattr(m, "state", None) is None for m in net)  # left reset
        outs = [net(x if g == 0 else torch.zeros_like(x)) for g in range(tsnn.num_steps(net))]
    assert schedule_runs == [True]
    assert torch.equal(outs[-1], result.logits)


def test_a_hand_built_chain_relay_pool_and_neuron_after_neuron(schedule_runs):
    """Per-step signals where the schedule has no shortcut: a relay's membrane pooled, a
    neuron integrating another's spikes, a readout counting spikes."""
    torch.manual_seed(0)
    T = 4
    kernel = tsnn.TemporalKernel(T, tau=3.0, td=0.0)
    for batched in (False, True):
        net = nn.Sequential(
            tsnn.TTFSNeuron(0, kernel=kernel, init_hidden=True, relay=True),
            tsnn.FirstSpikeMaxPool2d(2),
            tsnn.TemporalKernelSynapse(tsnn.TemporalKernel(T, tau=3.0), 0,
                                       nn.Conv2d(1, 3, 3, padding=1), window_batched=batched),
            tsnn.TTFSNeuron(1, T=T, tau=2.5, init_hidden=True),
            tsnn.TTFSNeuron(2, T=T, tau=2.0, init_hidden=True),
            tsnn.ReadoutIntegrator(3))
        x = torch.rand(3, 1, 8, 8)
        by_windows, loop = both(tsnn, net, x)
        assert_same_run(by_windows, loop)
        assert loop.logits.abs().sum() > 0
    assert schedule_runs == [True, True]


@pytest.mark.parametrize("batched", [False, True])
def test_a_snntorch_users_own_loop_gives_what_simulate_gives(batched, schedule_runs):
    """``snntorch.utils.reset`` and a hand-written ``spk = net(x_t)`` loop, spike times read off
    the recorded per-step spikes by hand: ``simulate`` 's (window by window) bit for bit."""
    import snntorch.utils

    model, x = build_sim_net("cnn-max", "ceil", torch.float32)
    net = tsnn.to_snntorch(model, window_batched=batched)
    with torch.no_grad():
        result = tsnn.simulate(net, x)
    assert schedule_runs == [True]
    spikes = {}
    for name, module in net.named_children():
        if isinstance(module, tsnn.TTFSNeuron):
            module.register_forward_hook(
                lambda m, i, o, name=name: spikes.setdefault(name, []).append(o.clone()))
    snntorch.utils.reset(net)
    with torch.no_grad():
        for step in range(tsnn.num_steps(net)):
            out = net(x if step == 0 else torch.zeros_like(x))
    assert out.dtype == result.logits.dtype and torch.equal(out, result.logits)
    T = result.T
    for name, times in result.spike_times.items():
        per_step = torch.stack(spikes[name])  # (steps, B, ...)
        assert per_step.sum(0).max() <= 1  # each neuron fires at most once
        window = per_step[(net.get_submodule(name).layer_index + 1) * T:][:T]
        by_hand = torch.where(window.any(0), window.float().argmax(0), T)
        assert torch.equal(by_hand, times), name
