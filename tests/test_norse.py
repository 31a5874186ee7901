"""The Norse adapter: parity with the surrogate (SPEC §8), Norse conventions, fine-tuning."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

pytest.importorskip("norse")

from norse.torch import SequentialState  # noqa: E402
from norse.torch.utils.state import _is_module_stateful  # noqa: E402

from ttfs_plugin import norse as tnorse  # noqa: E402
from ttfs_plugin import snntorch as tsnn  # noqa: E402
from ttfs_plugin.data import load_digits  # noqa: E402
from ttfs_plugin.errors import CheckpointError, ConfigError  # noqa: E402
from ttfs_plugin.export import ExportError  # noqa: E402
from ttfs_plugin.kernel import encode, threshold_table  # noqa: E402
from ttfs_plugin.layers import InputEncoder, TBBatchNorm1d  # noqa: E402
from ttfs_plugin.metrics import efficiency_figures  # noqa: E402
from ttfs_plugin.models import mlp, small_cnn, vgg16  # noqa: E402
from ttfs_plugin.simulation import agreement, surrogate_spike_times  # noqa: E402
from ttfs_plugin.timestep import is_silent, step_tensor  # noqa: E402
from ttfs_plugin.training import TrainConfig, fit, spike_proxy_loss  # noqa: E402


def randomise_batch_norm(model: nn.Module) -> nn.Module:
    """Non-trivial running statistics and affine parameters, then eval mode."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.1, 0.5)
    return model.eval()


def surrogate_counts(times: dict, T: int) -> dict:
    return {name: (t < T).flatten(1).sum(1) for name, t in times.items()}


def check_parity(model: nn.Module, x: torch.Tensor, exact: bool):
    logits, times = surrogate_spike_times(model, x)
    net = tnorse.to_norse(model)
    with torch.no_grad():
        result = tnorse.simulate(net, x)
    T = result.T
    assert result.steps == (len(times) + 1) * T
    assert list(result.spike_times) == list(times)  # the surrogate's layer names, in order
    scores = agreement(result, logits, times)
    counts = surrogate_counts(times, T)
    layers = [{"name": name, "neurons": t[0].numel(),
               "spikes_per_sample": c.double().mean().item(), "input": name == "input"}
              for (name, t), c in zip(times.items(), counts.values())]
    expected = efficiency_figures(layers, T)
    if exact:
        assert scores == {"agreement_with_surrogate": 1.0, "spike_time_agreement": 1.0}
        torch.testing.assert_close(result.logits, logits, atol=1e-9, rtol=0)
        for name, c in counts.items():
            assert torch.equal(result.spike_counts[name], c), name
        assert result.efficiency() == expected
    else:
        assert scores["agreement_with_surrogate"] >= 0.999
        assert scores["spike_time_agreement"] >= 0.9999
        mismatched = sum((result.spike_times[n].reshape(t.shape) != t).sum().item()
                         for n, t in times.items())
        for name, c in counts.items():
            assert (result.spike_counts[name] - c).abs().sum().item() <= mismatched, name
        assert result.efficiency()["spikes_per_sample"] == pytest.approx(
            expected["spikes_per_sample"], rel=1e-4)
        assert result.efficiency()["time_steps"] == expected["time_steps"]
    return net, result


# --------------------------------------------------------------------------- parity

MODELS = {
    "mlp": (lambda: mlp(), (32, 1, 8, 8)),
    "cnn-max": (lambda: small_cnn(channels=(4, 8), hidden=16, pool="max"), (8, 1, 28, 28)),
    "cnn-avg": (lambda: small_cnn(channels=(4, 8), hidden=16, pool="avg"), (8, 1, 28, 28)),
    "vgg16": (lambda: vgg16(width=1 / 16), (2, 3, 32, 32)),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", list(MODELS))
def test_parity_with_the_surrogate_on_random_networks(name, dtype):
    build, shape = MODELS[name]
    model = randomise_batch_norm(build().to(dtype))
    x = torch.rand(*shape, dtype=dtype)
    net, result = check_parity(model, x, exact=dtype == torch.float64)
    assert isinstance(net, SequentialState)
    assert result.logits.dtype == dtype
    assert sum(c.sum().item() for c in result.spike_counts.values()) > 0


def test_parity_after_training_on_digits():
    data = load_digits()
    model = mlp(hidden=(64,))
    fit(model, data.train, None, TrainConfig(epochs=2, sr_target=1), progress=False)
    x, _ = data.val.tensors
    check_parity(model.eval(), x, exact=False)


# --------------------------------------------------------------------------- the functional core


def test_feed_forward_step_spikes_at_the_encoded_time():
    T = 8
    p = tnorse.TTFSParameters(0, T, torch.tensor(3.0), torch.tensor(0.5), 1.0)
    u = torch.cat([torch.linspace(-0.5, 1.5, 40), threshold_table(3.0, 0.5, T)])  # ties too
    state, first = None, torch.full_like(u, T, dtype=torch.long)
    for step in range(2 * T):
        spikes, state = tnorse.ttfs_feed_forward_step(u if step == 0 else torch.zeros_like(u),
                                                      state, p)
        assert isinstance(state, tnorse.TTFSState) and state.step == step + 1
        if step >= T:
            assert not (spikes.bool() & (first < T)).any()  # fires once
            first[spikes.bool()] = step - T
    assert torch.equal(first, encode(u, threshold_table(3.0, 0.5, T)))


def test_feed_forward_step_uses_norse_surrogate_backward_and_exact_heaviside_forward():
    T = 4
    thr = threshold_table(10.0, 0.0, T)
    p = tnorse.TTFSParameters(0, T, torch.tensor(10.0), torch.tensor(0.0), method="super")
    mem = torch.tensor([thr[0].item(), thr[0].item() - 0.3, thr[0].item() + 0.2],
                       requires_grad=True)
    state = tnorse.TTFSState(mem, torch.zeros(3, dtype=torch.bool), step_tensor(T))  # fire
    spikes, _ = tnorse.ttfs_feed_forward_step(torch.zeros(3), state, p)
    assert spikes.tolist() == [1.0, 0.0, 1.0]  # u == thr fires (Norse's heaviside would not)
    spikes.sum().backward()
    v = (mem - thr[0]).detach()
    torch.testing.assert_close(mem.grad, 1 / (v.abs() + 1) ** 2)  # SuperSpike


def test_feed_forward_step_clamps_tau_like_the_kernel():
    p = tnorse.TTFSParameters(0, 4, torch.tensor(-1.0), torch.tensor(0.0))
    state = tnorse.TTFSState(torch.tensor([0.5]), torch.zeros(1, dtype=torch.bool),
                             step_tensor(4))
    spikes, _ = tnorse.ttfs_feed_forward_step(torch.zeros(1), state, p)
    assert torch.isfinite(spikes).all()


# --------------------------------------------------------------------------- Norse conventions


def test_cell_is_a_norse_cell_with_registered_kernel_parameters():
    from norse.torch.module.snn import SNNCell

    cell = tnorse.TTFSCell(1, T=8, tau=5.0, td=1.0)
    assert isinstance(cell, SNNCell) and _is_module_stateful(cell)
    names = dict(cell.named_parameters())
    assert names["kernel.tau"] is cell.kernel.tau and names["kernel.td"] is cell.kernel.td
    assert set(cell.state_dict()) >= {"kernel.tau", "kernel.td"}
    assert cell.p.tau is cell.kernel.tau and cell.p.layer_index == 1 and cell.p.T == 8
    with pytest.raises(AttributeError):
        cell.p = cell.p
    torch.testing.assert_close(cell.firing_floor(), cell.kernel.firing_floor())
    cell.to(torch.float64)
    assert cell.kernel.tau.dtype == torch.float64 and cell.p.td.dtype == torch.float64


def test_idle_steps_do_no_work():
    cell = tnorse.TTFSCell(2, T=4)
    x = torch.ones(3, 5)
    out1, state = cell(x, None)  # window 0: idle for layer 2
    out2, state2 = cell(x, state)
    assert is_silent(out1) and out2 is out1 and not out1.any()
    assert state2.step == 2 and state2.mem is state.mem
    state = state2._replace(step=step_tensor(8))  # window 2: integrates
    out, state = cell(x, state)
    assert torch.equal(state.mem, x) and is_silent(out)
    syn = tnorse.TemporalKernelSynapse(cell.kernel, 0, nn.Linear(5, 2))
    current, s = syn(torch.ones(3, 5), None)  # source 0 fires in window 1 only
    assert is_silent(current) and current.shape == (3, 2) and s.step == 1


def test_modules_work_inside_sequential_state_with_explicit_state():
    T = 6
    c0 = tnorse.TTFSCell(0, T=T, layer_name="input")
    c1 = tnorse.TTFSCell(1, T=T, layer_name="hidden")
    net = SequentialState(
        c0, tnorse.TemporalKernelSynapse(c0.kernel, 0, nn.Conv2d(1, 4, 3, padding=1)),
        c1, tnorse.FirstSpikeMaxPool2d(2),
        tnorse.TemporalKernelSynapse(c1.kernel, 1, nn.Sequential(nn.Flatten(), nn.Linear(64, 3))),
        tnorse.ReadoutIntegrator())
    assert all(net.stateful_layers)
    x = torch.rand(5, 1, 8, 8)
    state = None
    with torch.no_grad():
        for step in range(tnorse.num_steps(net)):
            out, state = net(x if step == 0 else torch.zeros_like(x), state)
        result = tnorse.simulate(net, x)
    assert tnorse.num_steps(net) == 3 * T
    assert isinstance(state[0], tnorse.TTFSState) and state[0].step == 3 * T
    assert isinstance(state[1], tnorse.SynapseState) and state[1].step == 3 * T
    assert isinstance(state[3], tnorse.PoolState) and state[3].emitted.shape == (5, 4, 4, 4)
    assert isinstance(state[5], tnorse.ReadoutState) and state[5].mem is out
    assert out.shape == (5, 3) and torch.equal(out, result.logits)
    assert list(result.spike_times) == ["input", "hidden"]
    assert net[1].bias is not None and net[1].op.bias is None  # bias stripped into its own


def test_to_float64_moves_the_shared_kernels():
    model = randomise_batch_norm(small_cnn(channels=(4, 8), hidden=16))
    net = tnorse.to_norse(model)
    params = {id(p) for p in net.parameters()}
    cells = [m for m in net if isinstance(m, tnorse.TTFSCell)]
    synapses = [m for m in net if isinstance(m, tnorse.TemporalKernelSynapse)]
    assert [c.layer_name for c in cells] == ["input", "ttfs1", "ttfs2", "ttfs3"]
    for cell in cells:
        assert id(cell.kernel.tau) in params and id(cell.kernel.td) in params
    for syn in synapses:
        assert syn.kernel is cells[syn.source_index].kernel
    net.to(torch.float64)
    assert all(p.dtype == torch.float64 for p in net.parameters())
    assert all(c.kernel.tau.dtype == torch.float64 for c in cells)
    x = torch.rand(4, 1, 28, 28, dtype=torch.float64)
    with torch.no_grad():
        result = tnorse.simulate(net, x)
    model64 = model.to(torch.float64)
    logits, _ = surrogate_spike_times(model64, x)
    torch.testing.assert_close(result.logits, logits, atol=1e-9, rtol=0)


def _same(a, b):
    assert torch.equal(a.logits, b.logits)
    assert a.spike_times.keys() == b.spike_times.keys()
    for name in a.spike_times:
        assert torch.equal(a.spike_times[name], b.spike_times[name])


def test_state_dict_round_trip_into_a_fresh_net():
    model = randomise_batch_norm(small_cnn(channels=(4, 8), hidden=16))
    net = tnorse.to_norse(model)
    with torch.no_grad():
        for cell in net:
            if isinstance(cell, tnorse.TTFSCell):
                cell.kernel.tau.add_(torch.rand(()) - 0.5)
                cell.kernel.td.add_(torch.rand(()) * 0.3)
    torch.manual_seed(1)
    fresh = tnorse.to_norse(small_cnn(channels=(4, 8), hidden=16).eval())
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        before = tnorse.simulate(fresh, x)
        fresh.load_state_dict(net.state_dict())
        _same(tnorse.simulate(net, x), tnorse.simulate(fresh, x))
    assert not torch.equal(before.logits, tnorse.simulate(fresh, x).logits)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_save_load_round_trip(tmp_path, dtype):
    model = randomise_batch_norm(small_cnn(channels=(4, 8), hidden=16, pool="avg").to(dtype))
    net = tnorse.to_norse(model)
    path = tmp_path / "net.pt"
    tnorse.save(net, path)
    loaded = tnorse.load(path)
    assert isinstance(loaded, SequentialState)
    assert all(p.dtype == dtype for p in loaded.parameters())
    cells = [m for m in loaded if isinstance(m, tnorse.TTFSCell)]
    assert all(s.kernel is cells[s.source_index].kernel
               for s in loaded if isinstance(s, tnorse.TemporalKernelSynapse))
    x = torch.rand(4, 1, 28, 28, dtype=dtype)
    with torch.no_grad():
        _same(tnorse.simulate(net, x), tnorse.simulate(loaded, x))
    tnorse.save(loaded, tmp_path / "again.pt")  # a loaded net saves again
    hand_built = SequentialState(tnorse.TTFSCell(0, T=4),
                                 tnorse.TemporalKernelSynapse(tnorse.TTFSCell(0, T=4).kernel, 0,
                                                              nn.Linear(3, 2)),
                                 tnorse.ReadoutIntegrator(1))
    tnorse.save(hand_built, tmp_path / "hand.pt")  # any network of the plugin's modules saves
    assert len(list(tnorse.load(tmp_path / "hand.pt"))) == 3
    with pytest.raises(ExportError, match="none of the plugin"):
        tnorse.save(SequentialState(nn.Linear(2, 2)), tmp_path / "x.pt")


def test_foreign_truncated_or_missing_files_are_refused(tmp_path):
    model = mlp(hidden=(16,)).eval()
    net = tnorse.to_norse(model)
    foreign = tmp_path / "foreign.pt"
    tsnn.save(tsnn.to_snntorch(model), foreign)
    with pytest.raises(CheckpointError, match="snntorch"):
        tnorse.load(foreign)
    good = tmp_path / "good.pt"
    tnorse.save(net, good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        tnorse.load(truncated)
    with pytest.raises(CheckpointError):
        tnorse.load(tmp_path / "missing.pt")


def test_unsupported_module_is_named():
    model = nn.Sequential(InputEncoder((4,), T=8), nn.Linear(4, 3), nn.Sigmoid())
    with pytest.raises(ExportError, match="Sigmoid"):
        tnorse.to_norse(model)


# --------------------------------------------------------------------------- fine-tuning


def _digits(n: int = 256):
    x, y = load_digits().train.tensors
    return x[:n].flatten(1), y[:n]


def _native_net(T: int = 8) -> SequentialState:
    torch.manual_seed(0)
    c0 = tnorse.TTFSCell(0, T=T, tau=4.0, layer_name="input")
    c1 = tnorse.TTFSCell(1, T=T, tau=4.0, norm=TBBatchNorm1d(32), layer_name="hidden")
    return SequentialState(c0, tnorse.TemporalKernelSynapse(c0.kernel, 0, nn.Linear(64, 32)),
                           c1, tnorse.TemporalKernelSynapse(c1.kernel, 1, nn.Linear(32, 10)),
                           tnorse.ReadoutIntegrator())


def _fine_tune(lambda_tb: float, steps: int = 20):
    x, y = _digits()
    net = _native_net()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        result = tnorse.simulate(net, x)  # (L+1)*T steps with autograd through time
        ce = F.cross_entropy(result.logits, y)
        loss = ce + lambda_tb * spike_proxy_loss(net) if lambda_tb else ce
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(ce.item())
    with torch.no_grad():
        result = tnorse.simulate(net, x)
    return net, losses, result, y


@pytest.fixture(scope="module")
def fine_tuned():
    return _fine_tune(0.0)


def test_fine_tuning_through_time_lowers_the_loss(fine_tuned):
    net, losses, result, y = fine_tuned
    assert losses[-1] < 0.5 * losses[0]
    assert (result.logits.argmax(1) == y).double().mean().item() > 0.8
    # the kernels of both layers were trained too
    assert net[2].kernel.tau.item() != 4.0 and net[2].kernel.td.item() != 0.0


def test_kernel_gradients_flow_through_norse_surrogate():
    x, y = _digits(32)
    net = _native_net()
    F.cross_entropy(tnorse.simulate(net, x).logits, y).backward()
    for cell in (net[0], net[2]):
        for p in (cell.kernel.tau, cell.kernel.td):
            assert p.grad is not None and torch.isfinite(p.grad) and p.grad != 0
    assert net[2].norm.weight.grad.abs().sum() > 0


def test_tb_loss_pairs_with_the_cell_and_lowers_spike_count(fine_tuned):
    net = _native_net()
    with pytest.raises(ConfigError):  # positions per channel unknown before a forward pass
        spike_proxy_loss(net)
    with torch.no_grad():
        tnorse.simulate(net, _digits(8)[0])
    assert spike_proxy_loss(net).item() > 0  # found through cell.norm
    _, _, plain, _ = fine_tuned
    _, losses, with_tb, _ = _fine_tune(0.2)
    assert losses[-1] < 0.5 * losses[0]
    spikes = plain.spike_counts["hidden"].double().mean().item()
    spikes_tb = with_tb.spike_counts["hidden"].double().mean().item()
    assert spikes_tb < 0.95 * spikes
