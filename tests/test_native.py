"""The exported networks as the host frameworks use them: every reset convention, gradients that
do not depend on the input's ``requires_grad`` and equal a hand-written reference of the step
rules, a spiking output layer for snnTorch's temporal losses and BPTT, and spike-train input."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

snn = pytest.importorskip("snntorch")
pytest.importorskip("norse")

import snntorch.utils  # noqa: E402
from norse.torch.functional.threshold import threshold as norse_threshold  # noqa: E402

with warnings.catch_warnings():  # "snntorch.backprop will be deprecated"
    warnings.simplefilter("ignore", DeprecationWarning)
    from snntorch import backprop, spikegen, surrogate  # noqa: E402
from snntorch import functional as SF  # noqa: E402

from ttfs_plugin import norse as tnorse  # noqa: E402
from ttfs_plugin import snntorch as tsnn  # noqa: E402
from ttfs_plugin.data import load_digits  # noqa: E402
from ttfs_plugin.errors import InputShapeError  # noqa: E402
from ttfs_plugin.kernel import TAU_MIN  # noqa: E402
from ttfs_plugin.layers import TemporalKernel  # noqa: E402
from ttfs_plugin.models import mlp, small_cnn  # noqa: E402
from ttfs_plugin.timestep import InputTimingError  # noqa: E402
from ttfs_plugin.training import TrainConfig, fit  # noqa: E402


def random_mlp(seed=0, hidden=(12,), dtype=torch.float32, quantizer="round"):
    torch.manual_seed(seed)
    model = mlp(hidden=hidden, T=8, tau0=4.0, quantizer=quantizer)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(0.0, 0.5)
            if isinstance(m, TemporalKernel):
                m.tau.uniform_(3.0, 6.0)
                m.td.uniform_(-0.5, 0.5)
    return model.eval().to(dtype)


def batch(n, seed):
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def hand_loop(net, x, steps):
    """The snnTorch user's own loop: ``out = net(x_t)``, image at step 0, zeros after."""
    out = None
    for step in range(steps):
        out = net(x if step == 0 else torch.zeros_like(x))
    return out


@pytest.fixture(scope="module")
def model():
    return random_mlp()


@pytest.fixture(scope="module")
def expected(model):
    """Each batch's logits from a fresh network."""
    return {seed: tsnn.simulate(tsnn.to_snntorch(model), batch(n, seed)).logits.detach()
            for seed, n in ((1, 6), (2, 6), (3, 4))}


# --- 1. the right answer under every reset convention -------------------------------------------

def test_snntorch_utils_reset_between_batches_gives_the_second_batchs_logits(model, expected):
    net = tsnn.to_snntorch(model)
    steps = tsnn.num_steps(net)
    first = hand_loop(net, batch(6, 1), steps)
    snntorch.utils.reset(net)  # reaches none of the plugin's modules ...
    second = hand_loop(net, batch(6, 2), steps)
    assert torch.equal(first, expected[1])
    assert torch.equal(second, expected[2])  # ... yet the new batch starts a new run
    assert not torch.equal(second, first)


def test_plugin_reset_and_no_reset_at_all(model, expected):
    net = tsnn.to_snntorch(model)
    steps = tsnn.num_steps(net)
    hand_loop(net, batch(6, 1), steps)
    tsnn.reset(net)
    assert torch.equal(hand_loop(net, batch(6, 2), steps), expected[2])
    assert torch.equal(hand_loop(net, batch(6, 1), steps), expected[1])  # no reset


def test_a_new_batch_size_without_reset_and_mid_run(model, expected):
    net = tsnn.to_snntorch(model)
    steps = tsnn.num_steps(net)
    hand_loop(net, batch(6, 1), steps)
    assert torch.equal(hand_loop(net, batch(4, 3), steps), expected[3])  # never all-zero
    hand_loop(net, batch(6, 1), 5)  # a partial run, then another size: starts at once
    assert torch.equal(hand_loop(net, batch(4, 3), steps), expected[3])


def test_a_loop_past_the_last_step_holds_the_logits(model, expected):
    net = tsnn.to_snntorch(model)
    steps = tsnn.num_steps(net)
    assert torch.equal(hand_loop(net, batch(6, 1), 3 * steps + 7), expected[1])


def test_new_input_in_the_middle_of_a_run_is_a_clear_error(model):
    net = tsnn.to_snntorch(model)
    hand_loop(net, batch(6, 1), 10)
    with pytest.raises(InputTimingError, match="step 10.*reset"):
        net(batch(6, 2))
    constant = tsnn.to_snntorch(model)  # the constant-current idiom of snn.Leaky
    x = batch(6, 1)
    constant(x)
    with pytest.raises(InputTimingError, match="one current impulse at step 0"):
        constant(x)


def test_a_hand_built_net_that_was_never_reset_refuses_rather_than_answers_stale():
    n0 = tsnn.TTFSNeuron(0, T=4, init_hidden=True)
    n1 = tsnn.TTFSNeuron(1, T=4, init_hidden=True)
    net = nn.Sequential(n0, tsnn.TemporalKernelSynapse(n0.kernel, 0, nn.Linear(5, 4)), n1,
                        tsnn.TemporalKernelSynapse(n1.kernel, 1, nn.Linear(4, 3)),
                        tsnn.ReadoutIntegrator(2))
    x = torch.rand(2, 5)
    hand_loop(net, x, tsnn.num_steps(net))
    with pytest.raises(InputTimingError, match="reset"):
        hand_loop(net, torch.rand(2, 5), 1)
    tsnn.reset(net)  # binds one clock: from now on a new batch starts by itself
    a = hand_loop(net, x, tsnn.num_steps(net))
    b = hand_loop(net, x, tsnn.num_steps(net))
    assert torch.equal(a, b)


def test_norse_state_none_starts_and_a_carried_state_is_refused(model, expected):
    net = tnorse.to_norse(model)
    steps = tnorse.num_steps(net)

    def run(x, state=None):
        out = None
        for step in range(steps):
            out, state = net(x if step == 0 else torch.zeros_like(x), state)
        return out, state

    with torch.no_grad():
        out, state = run(batch(6, 1))
        torch.testing.assert_close(out, expected[1])
        torch.testing.assert_close(run(batch(6, 2))[0], expected[2])
        with pytest.raises(InputTimingError, match="state=None"):
            run(batch(6, 2), state)  # a finished run's state with a new batch
        with pytest.raises(InputShapeError, match="fresh state"):
            run(batch(4, 3), state)  # another batch size


# --- 2. gradients -------------------------------------------------------------------------------

def parameter_grads(net, x, simulate):
    out = simulate(net, x).logits
    (out * torch.linspace(-1, 1, out.shape[1], dtype=out.dtype)).sum().backward()
    return {name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("adapter", [tsnn, tnorse], ids=["snntorch", "norse"])
def test_gradients_do_not_depend_on_the_inputs_requires_grad(model, adapter):
    convert = getattr(adapter, "to_snntorch", None) or adapter.to_norse
    off = parameter_grads(convert(model), batch(6, 1), adapter.simulate)
    on = parameter_grads(convert(model), batch(6, 1).requires_grad_(), adapter.simulate)
    assert set(on) == set(off) and any("kernel.tau" in n for n in on)
    for name in on:
        assert torch.equal(on[name], off[name]), name


def reference_logits(layers, x, T, spike_grad, quantizer):
    """SPEC §8 written out densely for an MLP: ``layers`` is a list of (W, b, tau, td) of the
    synapse out of each neuron layer (the neuron layer's kernel); straight-through spikes; the
    threshold ``theta0·kappa(k)`` (ceil) or ``theta0·kappa(k + 1/2)`` (round, SPEC §3)."""
    theta0 = 1.0
    shift = {"ceil": 0.0, "round": 0.5}[quantizer]
    value = x.flatten(1)  # layer 0's membrane: the impulse
    for W, b, tau, td in layers:
        k = torch.arange(T, dtype=x.dtype)
        kappa = torch.exp(-(k - td) / tau.clamp_min(TAU_MIN))
        thr = (theta0 * torch.exp(-(k + shift - td) / tau.clamp_min(TAU_MIN))).clamp_min(
            torch.finfo(x.dtype).tiny)
        fired = torch.zeros_like(value, dtype=torch.bool)
        current = b.expand(value.shape[0], -1)
        for step in range(T):
            v = value - thr[step]
            soft = spike_grad(v)
            spikes = ((v.detach() >= 0).to(x.dtype) + soft - soft.detach()) * (~fired)
            fired = fired | (v.detach() >= 0)
            current = current + (spikes @ W.T) * kappa[step]
        value = current
    return value


@pytest.mark.parametrize("backend", ["snntorch", "norse"])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("quantizer", ["ceil", "round"])
def test_float64_gradients_equal_the_step_rules_written_out(backend, seed, quantizer):
    model = random_mlp(seed, hidden=(10, 7), dtype=torch.float64, quantizer=quantizer)
    x = batch(5, seed).double()
    if backend == "snntorch":
        net, simulate = tsnn.to_snntorch(model), tsnn.simulate
        spike_grad = surrogate.atan()
    else:
        net, simulate = tnorse.to_norse(model), tnorse.simulate
        def spike_grad(v):
            return norse_threshold(v, "super", 100.0)
    synapses = [m for m in net.modules() if isinstance(m, tsnn.TemporalKernelSynapse)
                or isinstance(m, tnorse.TemporalKernelSynapse)]
    params = [((s.op[-1] if isinstance(s.op, nn.Sequential) else s.op).weight, s.bias,
               s.kernel.tau, s.kernel.td) for s in synapses]
    out = simulate(net, x).logits
    ref = reference_logits(params, x, 8, spike_grad, quantizer)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    weights = torch.linspace(-1, 1, out.shape[1], dtype=out.dtype)
    flat = [p for group in params for p in group]
    got = torch.autograd.grad((out * weights).sum(), flat)
    want = torch.autograd.grad((ref * weights).sum(), flat)
    assert any(g.abs().sum() > 0 for g in got[2::4])  # the kernels do get gradients
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


# --- 5. spiking output layer --------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits_model():
    data = load_digits()
    model = mlp(hidden=(64,))
    fit(model, data.train, None, TrainConfig(epochs=3, sr_target=1), progress=False)
    return model.eval(), data


def record(net, train):
    """Spike record ``(steps, B, C)`` and membrane record of the output layer."""
    spk_rec, mem_rec = [], []
    for x_t in train:
        spk, mem = net(x_t)
        spk_rec.append(spk)
        mem_rec.append(mem)
    return torch.stack(spk_rec), torch.stack(mem_rec)


def test_spiking_output_first_spike_agrees_with_the_readout(digits_model):
    model, data = digits_model
    x, y = data.val.tensors
    readout = tsnn.simulate(tsnn.to_snntorch(model), x)
    spiking = tsnn.to_snntorch(model, output="spikes")
    result = tsnn.simulate(spiking, x)
    assert result.steps == readout.steps + readout.T  # the output layer's fire window
    torch.testing.assert_close(result.logits, readout.logits)  # the output membrane
    agree = (result.first_spike_prediction == readout.logits.argmax(1)).double().mean()
    assert agree >= 0.95
    # snnTorch's own temporal accuracy reads the same class from the spike record
    with torch.no_grad():
        spk_rec, _ = record(spiking, tsnn.impulse_train(x, tsnn.num_steps(spiking)))
    assert spk_rec.sum(0).max() <= 1  # at most one spike per output neuron
    fired = spk_rec.sum((0, 2)) > 0
    assert SF.accuracy_temporal(spk_rec[:, fired], y[fired]) == pytest.approx(
        (result.first_spike_prediction[fired] == y[fired]).double().mean().item())


@pytest.mark.parametrize("loss_name", ["ce_temporal_loss", "mse_temporal_loss"])
def test_snntorch_temporal_losses_fine_tune_through_time(digits_model, loss_name):
    model, data = digits_model
    x, y = data.train.tensors[0][:128], data.train.tensors[1][:128]
    net = tsnn.to_snntorch(model, output="spikes")
    train = tsnn.impulse_train(x, tsnn.num_steps(net))
    loss_fn = getattr(SF, loss_name)()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    losses = []
    for _ in range(6):
        spk_rec, _ = record(net, train)
        loss = loss_fn(spk_rec, y)
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[-1] < losses[0]


def test_snntorch_bptt_runs_on_the_exported_net(digits_model):
    model, data = digits_model
    x, y = data.train.tensors[0][:96], data.train.tensors[1][:96]
    net = tsnn.to_snntorch(model, output="spikes")
    steps = tsnn.num_steps(net)
    loader = [(tsnn.impulse_train(x[i:i + 32], steps), y[i:i + 32]) for i in range(0, 96, 32)]
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    loss_fn = SF.ce_temporal_loss()
    first = backprop.BPTT(net, loader, optimizer=opt, criterion=loss_fn)
    for _ in range(3):
        last = backprop.BPTT(net, loader, optimizer=opt, criterion=loss_fn)
    assert torch.isfinite(first) and last < first


def test_norse_spiking_output_layer(digits_model):
    model, data = digits_model
    x = data.val.tensors[0][:64]
    with torch.no_grad():
        readout = tnorse.simulate(tnorse.to_norse(model), x)
        result = tnorse.simulate(tnorse.to_norse(model, output="spikes"), x)
    torch.testing.assert_close(result.logits, readout.logits)
    assert (result.first_spike_prediction == readout.logits.argmax(1)).double().mean() >= 0.95
    with pytest.raises(ValueError, match="output='spikes'"):
        _ = readout.first_spike_prediction


# --- 6. spike-train input -----------------------------------------------------------------------

@pytest.mark.parametrize("adapter", [tsnn, tnorse], ids=["snntorch", "norse"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_encoders_own_spike_train_gives_the_analog_result_exactly(adapter, dtype):
    torch.manual_seed(0)
    model = small_cnn(channels=(4, 8), hidden=16, T=8).eval().to(dtype)
    convert = getattr(adapter, "to_snntorch", None) or adapter.to_norse
    x = torch.rand(4, 1, 28, 28, dtype=dtype)
    with torch.no_grad():
        analog = adapter.simulate(convert(model), x)
        net = convert(model, input_mode="spikes")
        train = adapter.input_spike_train(x, net)
        assert train.shape == (8, *x.shape) and train.sum(0).max() <= 1
        spiking = adapter.simulate(net, train)
        as_bool = adapter.simulate(net, train.bool())
    assert torch.equal(spiking.logits, analog.logits)
    assert torch.equal(as_bool.logits, analog.logits)
    for name, t in analog.spike_times.items():
        assert torch.equal(spiking.spike_times[name], t), name


def test_spikegen_latency_codes_are_accepted():
    torch.manual_seed(0)
    model = mlp(hidden=(16,), T=8).eval()
    x = torch.rand(3, 1, 8, 8)
    train = spikegen.latency(x, num_steps=8, normalize=True, linear=True)
    net = tsnn.to_snntorch(model, input_mode="spikes")
    result = tsnn.simulate(net, train)
    times = result.spike_times["encoder"] if "encoder" in result.spike_times else next(
        iter(result.spike_times.values()))
    first = torch.where(train.any(0), train.argmax(0), torch.full_like(x, 8, dtype=torch.long))
    assert torch.equal(times.reshape(first.shape), first.long())  # relayed at the same k


def test_bad_spike_trains_are_refused():
    torch.manual_seed(0)
    model = mlp(hidden=(16,), T=8).eval()
    net = tsnn.to_snntorch(model, input_mode="spikes")
    x = torch.rand(3, 1, 8, 8)
    train = tsnn.input_spike_train(x, net)
    twice = train.clone()
    twice[7] = (train[:7].sum(0) > 0).float()  # every neuron that spiked spikes again
    with pytest.raises(InputTimingError, match="spiked twice"):
        tsnn.simulate(net, twice)
    with pytest.raises(InputShapeError, match="0 or 1"):
        tsnn.simulate(net, train * 2)
    with pytest.raises(InputShapeError, match="at most T=8"):
        tsnn.simulate(net, torch.cat([train, train]))
    with pytest.raises(InputTimingError, match="first-spike train"):
        late = (train.sum(0) > 0).float()
        hand_loop_train = [torch.zeros_like(x)] * 10 + [late]
        tsnn.reset(net)
        for x_t in hand_loop_train:
            net(x_t)
    with pytest.raises(InputShapeError, match="spike train"):
        tsnn.simulate(net, x[0, 0, 0])


def test_cross_entropy_fine_tuning_on_the_readout_still_works(digits_model):
    model, data = digits_model
    x, y = data.train.tensors[0][:128], data.train.tensors[1][:128]
    net = tsnn.to_snntorch(model)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(5):
        loss = F.cross_entropy(tsnn.simulate(net, x).logits, y)
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[-1] < losses[0]
