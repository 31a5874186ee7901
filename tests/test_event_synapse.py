"""The event-driven weight ops of the time-stepped synapses (ttfs_plugin.ops.event_synapse):
the summation order they define, batch and thread independence, a whole window into a membrane
as the loop's steps add it, when they apply, and that the simulation uses them in the loop and
in the window schedule alike."""

import itertools

import pytest
import torch
from torch import nn

from ttfs_plugin import ops
from ttfs_plugin.conv import Conv2d as PluginConv2d
from ttfs_plugin.ops import event_synapse as ev

pytest.importorskip("snntorch")

from _model_helpers import SIM_NETS, assert_same_result, build_sim_net  # noqa: E402

from ttfs_plugin import snntorch as snn_adapter  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _kernel_is_built():
    if ev.library() is None:
        pytest.fail("the event-driven synapse kernel did not build here")


CONVS = [
    dict(in_channels=3, out_channels=5, kernel_size=3, padding=1),
    dict(in_channels=4, out_channels=6, kernel_size=(3, 2), stride=2, padding=(2, 0)),
    dict(in_channels=4, out_channels=8, kernel_size=3, dilation=2, padding=2, groups=2),
    dict(in_channels=6, out_channels=6, kernel_size=1, groups=3),
    dict(in_channels=2, out_channels=3, kernel_size=5, stride=(1, 3), padding=(0, 1)),
]


def _input(shape, binary, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    mask = torch.rand(shape, generator=gen) < 0.4
    values = torch.ones(shape) if binary else torch.randn(shape, generator=gen)
    return (values * mask).to(dtype)


def _ordered_reference(op, x):
    """The documented order, one scalar at a time: for each output element, ``acc = +0``, then
    ``acc = acc + w * v`` over input channel, kernel row, kernel column ascending (non-zero v)."""
    if isinstance(op, nn.Linear):
        out = torch.zeros(x.shape[0], op.out_features, dtype=x.dtype)
        for b, j in itertools.product(range(x.shape[0]), range(op.out_features)):
            acc = torch.zeros((), dtype=x.dtype)
            for i in range(op.in_features):
                if x[b, i] != 0:
                    acc = acc + op.weight[j, i] * x[b, i]
            out[b, j] = acc
        return out
    n, _, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = op.kernel_size, op.stride, op.padding, op.dilation
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    cig, cog = op.in_channels // op.groups, op.out_channels // op.groups
    out = torch.zeros(n, op.out_channels, oh, ow, dtype=x.dtype)
    for b, co, y, xx in itertools.product(range(n), range(op.out_channels), range(oh), range(ow)):
        acc = torch.zeros((), dtype=x.dtype)
        group = co // cog
        for cl, ky, kx in itertools.product(range(cig), range(kh), range(kw)):
            iy, ix = y * sh - ph + ky * dh, xx * sw - pw + kx * dw
            if 0 <= iy < h and 0 <= ix < w:
                v = x[b, group * cig + cl, iy, ix]
                if v != 0:
                    acc = acc + op.weight[co, cl, ky, kx] * v
        out[b, co, y, xx] = acc
    return out


@torch.no_grad()
@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("index", range(len(CONVS)))
def test_conv_is_the_ordered_sum_bit_for_bit(index, binary):
    torch.manual_seed(index)
    conv = nn.Conv2d(**CONVS[index], bias=False)
    x = _input((2, conv.in_channels, 7, 6), binary, seed=index)
    event = ev.event_op(conv, x)
    assert event is not None
    got = ev.step_current(event, x)
    assert torch.equal(got, _ordered_reference(conv, x))
    torch.testing.assert_close(got, conv(x), rtol=1e-5, atol=1e-6)  # and it is the conv


@torch.no_grad()
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_linear_and_flatten_linear(dtype):
    torch.manual_seed(0)
    linear = nn.Linear(12, 5, bias=False).to(dtype)
    x = _input((3, 12), binary=False, dtype=dtype)
    assert torch.equal(ev.weight_op(linear, x), _ordered_reference(linear, x))
    flat = nn.Sequential(nn.Flatten(), nn.Linear(2 * 3 * 4, 5, bias=False)).to(dtype)
    x4 = _input((3, 2, 3, 4), binary=True, dtype=dtype)
    got = ev.weight_op(flat, x4)
    assert ev.event_op(flat, x4) is not None
    assert torch.equal(got, _ordered_reference(flat[1], x4.flatten(1)))
    # without the Flatten a Linear reads the last dimension: not the kernel's geometry
    assert ev.event_op(linear, x).geometry((3, 2, 6)) is None


@torch.no_grad()
def test_a_sample_does_not_depend_on_its_batch_or_the_thread_count():
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16, 3, padding=1, bias=False)
    x = _input((9, 8, 12, 12), binary=True)
    event = ev.event_op(conv, x)
    whole = ev.step_current(event, x)
    for b in range(9):
        assert torch.equal(ev.step_current(event, x[b:b + 1].clone())[0], whole[b])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        two = ev.step_current(event, x)
        torch.set_num_threads(1)
        one = ev.step_current(event, x)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, whole) and torch.equal(two, whole)


@torch.no_grad()
@pytest.mark.parametrize("T, with_bias", [(8, True), (8, False), (300, True)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_window_adds_what_the_loops_steps_add(T, with_bias, dtype):
    torch.manual_seed(T)
    conv = nn.Conv2d(4, 6, 3, padding=1, stride=2, bias=False).to(dtype)
    times = torch.randint(0, T + 1, (5, 4, 9, 8)).to(ops.spike_time_dtype(T))
    times[1] = T  # a silent sample
    kernel = torch.rand(T, dtype=dtype) + 0.1
    bias = torch.randn(6, dtype=dtype) if with_bias else None
    event = ev.event_op(conv, kernel)
    start = torch.randn(5, 6, 5, 4, dtype=dtype)
    loop = start.clone()
    for k in range(T):  # the loop: current = op(times == k) * kappa(k) (+ bias), mem + current
        current = ev.step_current(event, (times == k).to(dtype)) * kernel[k]
        if k == 0 and bias is not None:
            current = current + bias.view(1, -1, 1, 1)
        loop = loop + current
    window = start.clone()
    assert ev.add_window(event, times, kernel, bias, window)
    assert torch.equal(window, loop)


@torch.no_grad()
def test_a_window_declines_what_it_cannot_do_exactly():
    conv = nn.Conv2d(2, 3, 3, padding=1, bias=False)
    event = ev.event_op(conv, torch.zeros(0))
    times = torch.zeros(2, 2, 5, 5, dtype=torch.uint8)
    mem = torch.zeros(2, 3, 5, 5)
    kernel = torch.ones(4)
    assert not ev.add_window(event, times, torch.tensor([1.0, float("inf"), 1, 1]), None, mem)
    assert not ev.add_window(event, times, kernel, None, torch.zeros(2, 3, 4, 4))
    assert not ev.add_window(event, times, kernel, None, torch.zeros(2, 3, 5, 5).double())
    assert not ev.add_window(event, times.long(), kernel, None, mem)
    assert torch.equal(mem, torch.zeros_like(mem))  # nothing written when declined


def test_where_it_applies():
    conv = nn.Conv2d(2, 3, 3, bias=False)
    x = torch.zeros(1, 2, 5, 5)
    with torch.no_grad():
        assert ev.event_op(conv, x) is not None
        assert ev.event_op(PluginConv2d(2, 3, 3, bias=False), x) is not None
        assert ev.event_op(nn.Sequential(nn.Identity(), conv, nn.Dropout().eval()), x)
        assert ev.event_op(conv, x.double()) is None  # not the weight's dtype
        assert ev.event_op(nn.Conv2d(2, 3, 3, bias=True), x) is None
        assert ev.event_op(nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect", bias=False),
                           x) is None
        assert ev.event_op(nn.Sequential(nn.AvgPool2d(2), conv), x) is None
        assert ev.event_op(nn.Sequential(conv, nn.Dropout().train()), x) is None

        class Scaled(nn.Conv2d):  # a subclass may compute something else
            def forward(self, x):
                return 2 * super().forward(x)

        assert ev.event_op(Scaled(2, 3, 3, bias=False), x) is None
        with ops.use_backend("reference"):
            assert ev.event_op(conv, x) is None
        with torch.autocast("cpu"):
            assert ev.event_op(conv, x) is None
        handle = conv.register_forward_hook(lambda *a: None)
        assert ev.event_op(conv, x) is None
        handle.remove()
        handle = nn.modules.module.register_module_forward_pre_hook(lambda *a: None)
        try:
            assert ev.event_op(conv, x) is None
        finally:
            handle.remove()
    assert ev.event_op(conv, x) is None  # autograd needs the dense op


def _counting(monkeypatch):
    calls = {"step": 0, "window": 0}
    step, window = ev.step_current, ev.add_window

    def counted_step(*args):
        calls["step"] += 1
        return step(*args)

    def counted_window(*args):
        calls["window"] += 1
        return window(*args)

    monkeypatch.setattr(ev, "step_current", counted_step)
    import ttfs_plugin.window_schedule as schedule
    monkeypatch.setattr(schedule, "add_window", counted_window)
    return calls


@torch.no_grad()
@pytest.mark.parametrize("name", sorted(SIM_NETS))
def test_simulate_and_the_native_loop_both_run_event_driven(name, monkeypatch):
    model, x = build_sim_net(name, "ceil", torch.float32)
    net = snn_adapter.to_snntorch(model)
    calls = _counting(monkeypatch)
    scheduled = snn_adapter.simulate(net, x)
    assert calls["window"] > 0
    before = calls["step"]
    looped = snn_adapter.simulate(net, x, native_loop=True)
    assert calls["step"] > before
    assert_same_result(scheduled, looped)
    with ops.use_backend("reference"):  # dense weight ops in both: equal again
        dense = snn_adapter.simulate(net, x)
        assert_same_result(dense, snn_adapter.simulate(net, x, native_loop=True))
    # the same math in another summation order: the same predictions
    assert torch.equal(dense.logits.argmax(1), scheduled.logits.argmax(1))
    torch.testing.assert_close(dense.logits, scheduled.logits, rtol=1e-4, atol=1e-5)


@torch.no_grad()
def test_a_hook_on_a_weight_op_sees_every_step(monkeypatch):
    """A forward hook on a synapse's op gets the dense op's per-step calls, as before."""
    model, x = build_sim_net("cnn-max", "round", torch.float32)
    net = snn_adapter.to_snntorch(model)
    seen = []
    handle = net.conv2.op.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    try:
        calls = _counting(monkeypatch)
        scheduled = snn_adapter.simulate(net, x)
        looped = snn_adapter.simulate(net, x, native_loop=True)
    finally:
        handle.remove()
    assert seen.count(x.shape[0]) == 2 * model.config.T  # T per run (and a shape probe)
    assert calls["window"] > 0  # the other synapses still run event-driven
    assert_same_result(scheduled, looped)
