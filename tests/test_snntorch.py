"""snnTorch adapter: parity with the surrogate, the snnTorch ways, save/load, fine-tuning."""

import pytest
import torch
from torch import nn

snn = pytest.importorskip("snntorch")

from _model_helpers import randomise_batch_norm  # noqa: E402

from ttfs_plugin import snntorch as tsnn  # noqa: E402
from ttfs_plugin.data import load_digits  # noqa: E402
from ttfs_plugin.errors import CheckpointError  # noqa: E402
from ttfs_plugin.export import ExportError  # noqa: E402
from ttfs_plugin.layers import InputEncoder, TBBatchNorm1d  # noqa: E402
from ttfs_plugin.metrics import efficiency_figures  # noqa: E402
from ttfs_plugin.models import mlp, small_cnn, vgg16  # noqa: E402
from ttfs_plugin.simulation import agreement, surrogate_spike_times  # noqa: E402
from ttfs_plugin.training import TrainConfig, fit, spike_proxy_loss  # noqa: E402

CASES = {
    "mlp": (lambda: mlp(), (64, 1, 8, 8)),
    "cnn-max": (lambda: small_cnn(channels=(4, 8), hidden=16), (16, 1, 28, 28)),
    "cnn-avg": (lambda: small_cnn(channels=(4, 8), hidden=16, pool="avg"), (16, 1, 28, 28)),
    "vgg16-narrow": (lambda: vgg16(width=1 / 16), (4, 3, 32, 32)),
}


def check_parity(model, x, exact):
    logits, times = surrogate_spike_times(model, x)
    result = tsnn.simulate(tsnn.to_snntorch(model), x)
    scores = agreement(result, logits, times)
    if exact:
        assert scores == {"agreement_with_surrogate": 1.0, "spike_time_agreement": 1.0}
        torch.testing.assert_close(result.logits, logits, atol=1e-9, rtol=0)
    else:
        assert scores["agreement_with_surrogate"] >= 0.999
        assert scores["spike_time_agreement"] >= 0.9999
    return result, times


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", list(CASES))
def test_parity_with_the_surrogate(case, dtype):
    build, shape = CASES[case]
    torch.manual_seed(0)
    model = randomise_batch_norm(build()).to(dtype)
    x = torch.rand(*shape, dtype=dtype)
    result, times = check_parity(model, x, exact=dtype == torch.float64)
    # the simulation's spike counts and efficiency figures are the surrogate's
    T = model.config.T
    assert result.steps == (len(times) + 1) * T
    sur_counts = {name: (t < T).flatten(1).sum(1) for name, t in times.items()}
    if dtype == torch.float64:
        for name, counts in result.spike_counts.items():
            assert torch.equal(counts, sur_counts[name])
        layers = [{"name": n, "neurons": t[0].numel(),
                   "spikes_per_sample": sur_counts[n].double().mean().item(),
                   "input": n == "input"} for n, t in times.items()]
        assert result.efficiency() == efficiency_figures(layers, T)


def test_parity_of_a_trained_model():
    data = load_digits()
    model = mlp(hidden=(64,))
    fit(model, data.train, data.val, TrainConfig(epochs=2, sr_target=1, lambda_tb=1e-4),
        progress=False)
    x = data.val.tensors[0]
    check_parity(model.eval(), x, exact=False)
    check_parity(model.double(), x.double(), exact=True)


def test_latency_is_l_plus_one_windows():
    model = vgg16(width=1 / 32)
    assert tsnn.num_steps(tsnn.to_snntorch(model)) == 17 * 32  # 544, as in the paper


# --- the snnTorch ways -----------------------------------------------------------------------

def tiny_net(T=8, seed=0):
    torch.manual_seed(seed)
    n0 = tsnn.TTFSNeuron(0, T=T, init_hidden=True)
    n1 = tsnn.TTFSNeuron(1, T=T, tau=4.0, init_hidden=True)
    return nn.Sequential(n0, tsnn.TemporalKernelSynapse(n0.kernel, 0, nn.Linear(6, 5)), n1,
                         tsnn.TemporalKernelSynapse(n1.kernel, 1, nn.Linear(5, 3)),
                         tsnn.ReadoutIntegrator())


def test_init_hidden_in_sequential_returns_spikes_and_output_true_returns_mem():
    net = tiny_net()
    x = torch.rand(4, 6) * 2
    outs = [net(x if s == 0 else torch.zeros_like(x)) for s in range(3 * 8)]
    assert outs[-1].shape == (4, 3)
    neuron = tsnn.TTFSNeuron(0, T=8, init_hidden=True, output=True)
    spk, mem = neuron(x)
    assert spk.shape == mem.shape == x.shape and torch.equal(mem, x)
    assert not any(isinstance(m, tsnn.TTFSNeuron) for m in snn.SpikingNeuron.instances)


def test_explicit_state_matches_init_hidden():
    hidden = tsnn.TTFSNeuron(0, T=8, init_hidden=True)
    explicit = tsnn.TTFSNeuron(0, T=8)
    x = torch.rand(5, 7)
    state = None
    for step in range(16):
        inp = x if step == 0 else torch.zeros_like(x)
        spk_h = hidden(inp)
        spk_e, state = explicit(inp, state)
        assert torch.equal(spk_h, spk_e)
    assert state.step == 16 and torch.equal(state.fired, x >= explicit.firing_floor())
    with pytest.raises(TypeError, match="init_hidden"):
        hidden(x, state)


def test_each_neuron_fires_at_most_once_at_its_spike_time():
    neuron = tsnn.TTFSNeuron(0, T=8, tau=3.0)
    x = torch.tensor([[2.0, 1.0, 0.5, 0.2, 0.0, -1.0]])
    thr = neuron.kernel.thresholds().detach()
    expected = [next((k for k in range(8) if v >= thr[k]), 8) for v in x[0].tolist()]
    state, times = None, torch.full((6,), 8)
    total = torch.zeros(6)
    for step in range(16):
        spk, state = neuron(x if step == 0 else torch.zeros_like(x), state)
        total += spk[0]
        if step >= 8:
            times[spk[0] > 0] = step - 8
    assert times.tolist() == expected
    assert total.max() <= 1


def test_reset_between_batches_of_different_sizes():
    torch.manual_seed(0)
    model = randomise_batch_norm(small_cnn(channels=(4, 8), hidden=16))
    net = tsnn.to_snntorch(model)
    x = torch.rand(6, 1, 28, 28)
    big = tsnn.simulate(net, x)
    small = tsnn.simulate(net, x[:2])
    again = tsnn.simulate(net, x)
    torch.testing.assert_close(small.logits, big.logits[:2])
    torch.testing.assert_close(again.logits, big.logits)


def test_reset_touches_nested_modules_and_nothing_else():
    a, b = tiny_net(), tiny_net()
    outer = nn.Sequential(nn.Sequential(a))
    x = torch.rand(2, 6) * 2
    a(x)
    b(x)
    tsnn.reset(outer)
    assert a[0].state is None and a[1].step == 0  # nested: reset
    assert b[0].state is not None and b[1].step == 1  # other network: untouched


def test_reset_also_handles_snntorch_neurons_locally():
    leaky_a, leaky_b = snn.Leaky(beta=0.9, init_hidden=True), snn.Leaky(beta=0.9, init_hidden=True)
    leaky_a(torch.ones(2, 3))
    leaky_b(torch.ones(2, 3))
    tsnn.reset(nn.Sequential(leaky_a))
    assert leaky_a.mem.abs().sum() == 0 and leaky_b.mem.abs().sum() > 0


def test_unsupported_module_is_named():
    model = nn.Sequential(InputEncoder((1, 2, 2), T=4), nn.Flatten(), nn.Linear(4, 3),
                          nn.Sigmoid(), nn.Linear(3, 2))
    with pytest.raises(ExportError, match=r"'3' \(Sigmoid\); supported: InputEncoder"):
        tsnn.to_snntorch(model)


def test_save_and_load_rebuild_the_network(tmp_path):
    torch.manual_seed(0)
    model = randomise_batch_norm(small_cnn(channels=(4, 8), hidden=16, pool="avg"))
    net = tsnn.to_snntorch(model)
    tsnn.save(net, tmp_path / "net.pt")
    again = tsnn.load(tmp_path / "net.pt")
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(tsnn.simulate(again, x).logits, tsnn.simulate(net, x).logits)
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes((tmp_path / "net.pt").read_bytes()[:500])
    with pytest.raises(CheckpointError, match="truncated"):
        tsnn.load(damaged)
    with pytest.raises(CheckpointError, match="not an exported"):
        torch.save({"x": 1}, tmp_path / "other.pt")
        tsnn.load(tmp_path / "other.pt")


# --- fine-tuning through time ---------------------------------------------------------------

def native_digits_net(seed=0):
    torch.manual_seed(seed)
    n0 = tsnn.TTFSNeuron(0, T=8, tau=4.0, init_hidden=True)
    n1 = tsnn.TTFSNeuron(1, T=8, tau=4.0, init_hidden=True, norm=TBBatchNorm1d(32))
    return nn.Sequential(n0, tsnn.TemporalKernelSynapse(n0.kernel, 0, nn.Linear(64, 32)), n1,
                         tsnn.TemporalKernelSynapse(n1.kernel, 1, nn.Linear(32, 10)),
                         tsnn.ReadoutIntegrator())


def fine_tune(lambda_tb, steps=15):
    data = load_digits()
    x, y = data.train.tensors[0][:256].flatten(1), data.train.tensors[1][:256]
    net = native_digits_net()
    opt = torch.optim.Adam(net.parameters(), lr=3e-2)
    losses = []
    for _ in range(steps):
        tsnn.reset(net)
        out = None
        for step in range(tsnn.num_steps(net)):
            out = net(x if step == 0 else torch.zeros_like(x))
        loss = nn.functional.cross_entropy(out, y)
        losses.append(loss.item())
        if lambda_tb:
            loss = loss + lambda_tb * spike_proxy_loss(net)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    result = tsnn.simulate(net, x)
    return losses, result.spike_counts["2"].double().mean().item()


def test_fine_tuning_through_time_learns_and_tb_cuts_spikes():
    losses, spikes = fine_tune(0.0)
    assert losses[-1] < 0.7 * losses[0]
    losses_tb, spikes_tb = fine_tune(0.2)
    assert spikes_tb < 0.7 * spikes
    assert losses_tb[-1] < 0.7 * losses_tb[0]  # still learns
