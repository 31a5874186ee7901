"""The snnTorch idioms ``snn.Leaky``'s own tests check, run against ``tsnn.TTFSNeuron``.

Modelled on snnTorch's ``tests/test_snntorch/test_leaky.py`` (init_hidden / explicit state,
``output=True``, ``TypeError`` for ``mem`` with ``init_hidden``, the ``SpikingNeuron`` keywords,
compiling), with TTFS semantics: fire at most once, at the encoded time.
"""

import logging
import math

import pytest
import torch
from torch import nn

snn = pytest.importorskip("snntorch")

from snntorch import surrogate  # noqa: E402

from ttfs_plugin import snntorch as tsnn  # noqa: E402
from ttfs_plugin.errors import ConfigError  # noqa: E402
from ttfs_plugin.kernel import encode  # noqa: E402
from ttfs_plugin.models import mlp  # noqa: E402
from ttfs_plugin.timestep import NeuronState, step_tensor  # noqa: E402

T = 6


def impulse(x, steps):
    """``x`` at step 0, zeros after (the analog input convention)."""
    return [x if s == 0 else torch.zeros_like(x) for s in range(steps)]


def run_hidden(neuron, x, steps=2 * T):
    return [neuron(x_t) for x_t in impulse(x, steps)]


def run_explicit(neuron, x, mem, steps=2 * T):
    spikes = []
    for x_t in impulse(x, steps):
        spk, mem = neuron(x_t, mem)
        spikes.append(spk)
    return spikes, mem


def fire_step_state(mem):
    """A layer-0 state at the first step of its fire window (local time 0)."""
    return NeuronState(mem, torch.zeros(mem.shape, dtype=torch.bool), step_tensor(T))


# --- calling conventions ---------------------------------------------------------------------

def test_init_hidden_in_sequential_returns_spikes_only():
    neuron = tsnn.TTFSNeuron(0, T=T, tau=3.0, init_hidden=True)
    net = nn.Sequential(nn.Flatten(), neuron)
    x = torch.rand(4, 2, 3) * 1.5
    outs = run_hidden(net, x)
    assert all(isinstance(o, torch.Tensor) and o.shape == (4, 6) for o in outs)
    total = torch.stack(outs).sum(0)
    assert set(torch.stack(outs).unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(total, (x.flatten(1) >= neuron.firing_floor()).float())
    assert neuron.state.step == 2 * T


def test_output_true_returns_spikes_and_membrane():
    neuron = tsnn.TTFSNeuron(0, T=T, init_hidden=True, output=True)
    x = torch.rand(3, 5)
    out = neuron(x)
    assert isinstance(out, tuple) and len(out) == 2
    spk, mem = out
    assert spk.shape == mem.shape == x.shape
    assert torch.equal(mem, x) and mem is neuron.mem
    assert not spk.any()  # layer 0 integrates in window 0, fires in window 1


def test_explicit_state_returns_spikes_and_neuron_state():
    neuron = tsnn.TTFSNeuron(0, T=T)
    x = torch.rand(3, 5)
    spk, state = neuron(x)
    assert isinstance(state, NeuronState)
    assert spk.shape == x.shape and torch.equal(state.mem, x)
    assert state.fired.dtype == torch.bool and not state.fired.any()
    assert state.step.dtype == torch.long and state.step.dim() == 0 and state.step == 1
    assert neuron.state is None  # explicit state lives outside the module


def test_init_leaky_loop_equals_init_hidden_loop():
    x = torch.rand(4, 7) * 1.5
    hidden = tsnn.TTFSNeuron(0, T=T, tau=4.0, init_hidden=True)
    explicit = tsnn.TTFSNeuron(0, T=T, tau=4.0)
    mem = explicit.init_leaky()
    assert mem.mem.numel() == 0 and mem.step == 0
    spk_e, mem = run_explicit(explicit, x, mem)
    spk_h = run_hidden(hidden, x)
    for a, b in zip(spk_e, spk_h):
        assert torch.equal(a, b)
    assert torch.equal(mem.mem, hidden.state.mem) and torch.equal(mem.fired, hidden.state.fired)
    assert int(mem.step) == int(hidden.state.step) == 2 * T
    assert torch.stack(spk_e).sum() > 0


def test_zero_tensor_mem_starts_a_run_and_nonzero_tensor_is_refused():
    neuron = tsnn.TTFSNeuron(0, T=T)
    x = torch.rand(2, 4) + 0.1
    spk_zero, state_zero = neuron(x, torch.zeros_like(x))
    spk_none, state_none = neuron(x, None)
    assert torch.equal(spk_zero, spk_none) and torch.equal(state_zero.mem, state_none.mem)
    assert state_zero.step == 1
    with pytest.raises(TypeError, match="NeuronState"):
        neuron(x, torch.ones_like(x))
    with pytest.raises(TypeError):
        neuron(x, [0.0])


def test_mem_with_init_hidden_raises_type_error_like_leaky():
    x = torch.rand(2, 1)
    with pytest.raises(TypeError):
        snn.Leaky(beta=0.5, init_hidden=True)(x, x)  # the behaviour being mirrored
    neuron = tsnn.TTFSNeuron(0, T=T, init_hidden=True)
    with pytest.raises(TypeError, match="init_hidden"):
        neuron(x, x)
    with pytest.raises(TypeError, match="init_hidden"):
        neuron(x, neuron.init_leaky())


# --- the SpikingNeuron keywords ----------------------------------------------------------------

def test_threshold_keyword_is_theta0_and_setting_it_rescales_the_table():
    neuron = tsnn.TTFSNeuron(0, T=T, tau=3.0, threshold=0.5)
    assert neuron.kernel.theta0 == 0.5 and neuron.threshold == 0.5
    unit = tsnn.TTFSNeuron(0, T=T, tau=3.0).kernel.thresholds().detach()
    torch.testing.assert_close(neuron.kernel.thresholds().detach(), 0.5 * unit)
    neuron.threshold = 2.0
    assert neuron.kernel.theta0 == 2.0
    torch.testing.assert_close(neuron.kernel.thresholds().detach(), 2.0 * unit)
    # and the neuron fires by the new table: 1.5 crosses 2*kappa(1) ~ 1.43, not 2*kappa(0)
    x = torch.full((1, 1), 1.5)
    spikes = torch.stack(run_explicit(neuron, x, None)[0])
    assert spikes.sum() == 1 and spikes[T + 1].item() == 1.0
    assert encode(x, neuron.kernel.thresholds()).item() == 1
    with pytest.raises(ConfigError, match="disagree"):
        tsnn.TTFSNeuron(0, T=T, theta0=2.0, threshold=0.5)


def _spike_and_grad(neuron, values):
    mem = torch.tensor(values, requires_grad=True)
    spikes, _ = neuron(torch.zeros_like(mem), fire_step_state(mem))
    if spikes.requires_grad:
        spikes.sum().backward()
    return spikes.detach(), mem.grad


def test_spike_grad_changes_the_backward_pass_only():
    thr0 = tsnn.TTFSNeuron(0, T=T).kernel.thresholds()[0].item()
    values = [thr0, thr0 - 0.3, thr0 + 0.2, thr0 - 0.01]
    default = tsnn.TTFSNeuron(0, T=T)  # snnTorch's default surrogate: atan
    fast = tsnn.TTFSNeuron(0, T=T, spike_grad=surrogate.fast_sigmoid())
    spk_default, grad_default = _spike_and_grad(default, values)
    spk_fast, grad_fast = _spike_and_grad(fast, values)
    assert spk_default.tolist() == spk_fast.tolist() == [1.0, 0.0, 1.0, 0.0]  # u == thr fires
    v = torch.tensor(values) - thr0
    torch.testing.assert_close(grad_fast, 1 / (25 * v.abs() + 1) ** 2)  # fast_sigmoid, slope 25
    torch.testing.assert_close(grad_default, 1 / (1 + (math.pi * v) ** 2))  # atan, alpha 2
    assert not torch.allclose(grad_default, grad_fast)


def test_surrogate_disable_passes_no_gradient_through_spikes():
    thr0 = tsnn.TTFSNeuron(0, T=T).kernel.thresholds()[0].item()
    neuron = tsnn.TTFSNeuron(0, T=T, surrogate_disable=True)
    mem = torch.tensor([thr0 + 0.1, thr0 - 0.1], requires_grad=True)
    spikes, _ = neuron(torch.zeros_like(mem), fire_step_state(mem))
    assert spikes.tolist() == [1.0, 0.0]
    assert not spikes.requires_grad and spikes.grad_fn is None


@pytest.mark.parametrize("kwargs", [
    {"inhibition": True},
    {"learn_threshold": True},
    {"reset_mechanism": "subtract"},
    {"reset_mechanism": "zero"},
    {"state_quant": lambda mem: mem.round()},
    {"graded_spikes_factor": 2.0},
    {"learn_graded_spikes_factor": True},
], ids=lambda kw: next(iter(kw)) + "=" + repr(next(iter(kw.values())))[:10])
def test_keywords_without_ttfs_meaning_are_refused(kwargs):
    with pytest.raises(ConfigError, match=next(iter(kwargs))) as info:
        tsnn.TTFSNeuron(0, T=T, **kwargs)
    assert isinstance(info.value, ValueError)


def test_accepted_defaults_of_the_refused_keywords():
    neuron = tsnn.TTFSNeuron(0, T=T, inhibition=False, learn_threshold=False,
                             reset_mechanism="none", state_quant=False,
                             graded_spikes_factor=1.0, learn_graded_spikes_factor=False)
    spk, _ = neuron(torch.ones(1, 2))
    assert spk.shape == (1, 2)


# --- module bookkeeping --------------------------------------------------------------------------

def test_not_in_the_global_instance_list_and_kernel_in_state_dict():
    before = len(snn.SpikingNeuron.instances)
    neuron = tsnn.TTFSNeuron(0, T=T, tau=5.0, td=0.5)
    assert len(snn.SpikingNeuron.instances) == before
    assert all(m is not neuron for m in snn.SpikingNeuron.instances)
    sd = neuron.state_dict()
    assert {"kernel.tau", "kernel.td"} <= set(sd)
    assert sd["kernel.tau"].item() == 5.0 and sd["kernel.td"].item() == 0.5
    params = dict(neuron.named_parameters())
    assert params["kernel.tau"] is neuron.kernel.tau and params["kernel.td"] is neuron.kernel.td


def test_to_float64_moves_the_kernel_and_the_run():
    neuron = tsnn.TTFSNeuron(0, T=T, tau=3.0).to(torch.float64)
    assert neuron.kernel.tau.dtype == neuron.kernel.td.dtype == torch.float64
    assert neuron.kernel.thresholds().dtype == torch.float64
    spk, state = neuron(torch.rand(2, 3))  # a float32 input joins the neuron's dtype
    assert spk.dtype == state.mem.dtype == torch.float64


def test_detach_hidden_detaches_the_membrane():
    neuron = tsnn.TTFSNeuron(0, T=T, init_hidden=True)
    x = torch.rand(2, 3, requires_grad=True)
    neuron(x)
    assert neuron.mem.requires_grad
    neuron.detach_hidden()
    assert not neuron.mem.requires_grad and neuron.mem.grad_fn is None
    assert torch.equal(neuron.mem, x.detach()) and neuron.state.step == 1
    neuron.reset_hidden()
    assert neuron.mem is None
    neuron.detach_hidden()  # nothing to detach: no error


# --- shapes and spike timing ---------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(5, 9), (2, 3, 4, 4)], ids=["B,N", "B,C,H,W"])
def test_fires_at_most_once_at_the_encoded_time(shape):
    neuron = tsnn.TTFSNeuron(0, T=T, tau=3.0, td=0.5, init_hidden=True)
    x = torch.rand(*shape) * 2 - 0.3
    thr = neuron.kernel.thresholds()
    x.view(-1)[: T] = thr.detach()  # ties: u == thr[k] fires at k
    spikes = torch.stack(run_hidden(neuron, x))
    assert spikes.shape == (2 * T, *shape)
    assert spikes.sum(0).max() <= 1
    assert not spikes[:T].any()  # window 0 integrates
    fired = spikes[T:].bool()
    times = torch.where(fired.any(0), fired.float().argmax(0), torch.tensor(T))
    assert torch.equal(times, encode(x, thr))
    assert fired.any() and (times == T).any()  # both spiking and silent neurons present


@pytest.mark.parametrize("dtype", [torch.bool, torch.int64, torch.int32])
def test_bool_and_int_inputs_are_converted(dtype):
    x = torch.tensor([[0, 1, 2, 0, 1]]).to(dtype)
    ref = tsnn.TTFSNeuron(0, T=T, tau=3.0)
    other = tsnn.TTFSNeuron(0, T=T, tau=3.0)
    spk_ref, st_ref = run_explicit(ref, x.float(), None)
    spk, st = run_explicit(other, x, None)
    assert st.mem.dtype == torch.float32 and torch.equal(st.mem, st_ref.mem)
    for a, b in zip(spk, spk_ref):
        assert a.dtype == torch.float32 and torch.equal(a, b)
    assert torch.stack(spk).sum() == (x.float() >= ref.firing_floor()).sum() > 0


# --- torch.compile ---------------------------------------------------------------------------

def _exported(T_, seed=0):
    torch.manual_seed(seed)
    return tsnn.to_snntorch(mlp(hidden=(8,), T=T_).eval())


def _runner(net):
    steps = tsnn.num_steps(net)

    def run(x):
        zeros = torch.zeros_like(x)
        out = None
        for s in range(steps):
            out = net(x if s == 0 else zeros)
        return out
    return run


def test_torch_compile_of_a_stepping_loop_matches_eager_exactly():
    net = _exported(4)
    run = _runner(net)
    x = torch.rand(3, 1, 8, 8)
    torch._dynamo.reset()
    compiled = torch.compile(run)  # the default backend (inductor)
    with torch.no_grad():
        for batch in (x, torch.rand(3, 1, 8, 8)):
            tsnn.reset(net)
            eager = run(batch).clone()
            tsnn.reset(net)
            out = compiled(batch)
            assert out.shape == (3, 10)
            assert torch.equal(out, eager)
    torch._dynamo.reset()


class _RecompileCounter(logging.Handler):
    def __init__(self):
        super().__init__()
        self.count = 0

    def emit(self, record):
        if "Recompiling function" in record.getMessage():
            self.count += 1


def _recompiles(T_):
    """(recompilations, graphs, steps) of compiling one whole run of an exported net."""
    from torch._dynamo.utils import counters

    net = _exported(T_)
    run = _runner(net)
    x = torch.rand(2, 1, 8, 8)
    torch._dynamo.reset()
    counters.clear()
    handler = _RecompileCounter()
    logger = logging.getLogger("torch._dynamo")
    torch._logging.set_logs(recompiles=True)
    logger.addHandler(handler)
    try:
        with torch.no_grad():
            tsnn.reset(net)
            eager = run(x).clone()
            compiled = torch.compile(run, backend="eager")
            tsnn.reset(net)
            out = compiled(x)
            graphs = counters["stats"]["unique_graphs"]
            tsnn.reset(net)  # a second run compiles (almost) nothing new
            again = compiled(x)
            graphs_again = counters["stats"]["unique_graphs"] - graphs
    finally:
        logger.removeHandler(handler)
        torch._logging.set_logs()
        torch._dynamo.reset()
    assert torch.equal(out, eager) and torch.equal(again, eager)
    return handler.count, graphs, graphs_again, tsnn.num_steps(net)


def test_torch_compile_recompiles_do_not_grow_with_the_number_of_steps():
    short = _recompiles(4)
    long = _recompiles(16)
    assert long[3] == 4 * short[3] == 48
    assert long[0] == short[0]  # recompilations independent of T: no per-step specialisation
    assert long[1] == short[1]  # the same graphs for 12 and 48 steps
    assert long[0] < long[3]  # fewer recompilations than steps
    assert short[2] <= 2 and long[2] <= 2  # a new run of the same shape: nothing to recompile
