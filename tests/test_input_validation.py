"""Input validation where a user's tensor enters: the surrogate ``TTFSNetwork`` (its input
encoder) and the exported snnTorch / Norse networks (their input layer at step 0, their first
synapse for the shape). Each bad input is one ``InputShapeError`` whose message names the
problem and the fix; inputs at the boundaries of ``[0, 1]`` still pass."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

pytest.importorskip("snntorch")
pytest.importorskip("norse")

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", category=FutureWarning)
    from norse.torch import SequentialState  # noqa: E402
    from norse.torch.module.snn import SNNCell  # noqa: E402

import ttfs_plugin.layers as layers  # noqa: E402
import ttfs_plugin.timestep as timestep  # noqa: E402
from ttfs_plugin import norse as tnorse  # noqa: E402
from ttfs_plugin import snntorch as tsnn  # noqa: E402
from ttfs_plugin.errors import InputShapeError, TTFSError  # noqa: E402
from ttfs_plugin.models import mlp, small_cnn  # noqa: E402
from ttfs_plugin.stepped import neurons_of  # noqa: E402

SHAPE = (1, 12, 12)


def cnn():
    torch.manual_seed(0)
    return small_cnn(in_shape=SHAPE, channels=(4, 8), hidden=16, T=8).eval()


def surrogate(x):
    return cnn()(x)


def snntorch_net(x):
    return tsnn.simulate(tsnn.to_snntorch(cnn()), x).logits


def norse_net(x):
    return tnorse.simulate(tnorse.to_norse(cnn()), x).logits


RUNNERS = {"surrogate": surrogate, "snntorch": snntorch_net, "norse": norse_net}
EXPORTED = ["snntorch", "norse"]


def image(*shape):
    return torch.rand(2, *(shape or SHAPE))


def with_value(value):
    x = image()
    x[1, 0, 3, 4] = value
    return x


RANGE = r"inputs must lie in \[0, 1\] \(got min {}, max {}\); scale images to \[0, 1\] with " \
        r"ToTensor\(\) \(or x\.float\(\) / 255 for uint8\) and do not mean/std-normalise"
NON_FINITE = r"inputs contain NaN or inf .*torch\.nan_to_num"

# (input, message) that every runner refuses the same way
VALUE_CASES = {
    "0-255 image": (lambda: torch.arange(2 * 144).float().remainder(256).view(2, *SHAPE),
                    RANGE.format(0, 255)),
    "normalised image": (lambda: (torch.linspace(0, 1, 288).view(2, *SHAPE) - 0.5) / 0.25,
                         RANGE.format(-2, 2)),
    "one value above 1": (lambda: with_value(1.0001), RANGE.format(r"[\d.e-]+", "1")),
    "one negative value": (lambda: with_value(-1e-3), RANGE.format("-0.001", r"[\d.]+")),
    "NaN": (lambda: torch.full((2, *SHAPE), math.nan), NON_FINITE),
    "one NaN": (lambda: with_value(math.nan), NON_FINITE),
    "inf": (lambda: with_value(math.inf), NON_FINITE),
    "-inf": (lambda: with_value(-math.inf), NON_FINITE),
}


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("case", VALUE_CASES)
def test_bad_values_are_refused_with_the_fix(runner, case):
    make, message = VALUE_CASES[case]
    with pytest.raises(InputShapeError, match=message) as info:
        RUNNERS[runner](make())
    assert "\n" not in str(info.value)  # one line
    assert isinstance(info.value, TTFSError) and isinstance(info.value, ValueError)


# --- shapes ------------------------------------------------------------------------------------

@pytest.mark.parametrize("runner, message", [
    ("surrogate", r"\(2, 3, 12, 12\) does not match the model's \(N, 1, 12, 12\) \(3 channels "
                  r"where the model expects 1\)"),
    ("snntorch", r"input of shape \(2, 3, 12, 12\) has 3 channels where the network's first "
                 r"layer \(Conv2d\) expects 1; feed \(B, 1, H, W\)"),
    ("norse", r"input of shape \(2, 3, 12, 12\) has 3 channels where the network's first "
              r"layer \(Conv2d\) expects 1"),
])
def test_wrong_channel_count(runner, message):
    with pytest.raises(InputShapeError, match=message):
        RUNNERS[runner](image(3, 12, 12))


@pytest.mark.parametrize("runner, message", [
    ("surrogate", r"input of shape \(2, 12, 12\) does not match the model's"),
    ("snntorch", r"input of shape \(2, 12, 12\) is 3-D where the network's first layer "
                 r"\(Conv2d\) takes \(B, 1, H, W\); add the missing dimension"),
    ("norse", r"input of shape \(2, 12, 12\) is 3-D where the network's first layer"),
])
def test_wrong_rank(runner, message):
    with pytest.raises(InputShapeError, match=message):
        RUNNERS[runner](torch.rand(2, 12, 12))


@pytest.mark.parametrize("runner", EXPORTED)
def test_no_batch_dimension(runner):
    with pytest.raises(InputShapeError, match=r"\(144,\) has no batch dimension.*unsqueeze\(0\)"):
        RUNNERS[runner](torch.rand(144))


@pytest.mark.parametrize("runner", EXPORTED)
def test_another_image_size_is_named_at_step_0(runner):
    with pytest.raises(InputShapeError, match=r"the output of layer 2 \(shape \(2, 8, 4, 4\)\) "
                       r"has 128 values per sample where fc3 \(Linear after Flatten\) takes 72; "
                       "is the input image of the size the network was built for"):
        RUNNERS[runner](torch.rand(2, 1, 16, 16))


@pytest.mark.parametrize("adapter, convert", [(tsnn, tsnn.to_snntorch),
                                              (tnorse, tnorse.to_norse)])
def test_exported_mlp_checks_values_per_sample(adapter, convert):
    net = convert(mlp(hidden=(16,)).eval())
    with pytest.raises(InputShapeError, match=r"input of shape \(2, 3, 8, 8\) has 192 values per "
                       r"sample where the network's first layer \(Linear after Flatten\) takes "
                       "64; check the channel count and image size"):
        adapter.simulate(net, torch.rand(2, 3, 8, 8))
    # an MLP sees only the flattened values: (B, 64) and (B, 1, 8, 8) are the same input
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(adapter.simulate(net, x.view(2, 64)).logits,
                       adapter.simulate(net, x).logits)


def test_hand_built_nets_check_shapes_without_any_binding():
    n0, n1 = tsnn.TTFSNeuron(0, T=4, init_hidden=True), tsnn.TTFSNeuron(1, T=4, init_hidden=True)
    net = nn.Sequential(n0, tsnn.TemporalKernelSynapse(n0.kernel, 0, nn.Linear(10, 5)), n1,
                        tsnn.TemporalKernelSynapse(n1.kernel, 1, nn.Linear(5, 3)),
                        tsnn.ReadoutIntegrator(2))
    with pytest.raises(InputShapeError, match=r"\(4, 7\) has 7 features \(last dimension\) "
                       r"where the network's first layer \(Linear\) takes 10"):
        net(torch.rand(4, 7))
    c0, c1 = tnorse.TTFSCell(0, T=4), tnorse.TTFSCell(1, T=4)
    conv = SequentialState(c0, tnorse.TemporalKernelSynapse(c0.kernel, 0, nn.Conv2d(2, 3, 3)),
                           c1, tnorse.TemporalKernelSynapse(c1.kernel, 1, nn.Flatten()),
                           tnorse.ReadoutIntegrator(2))
    with pytest.raises(InputShapeError, match="has 1 channels where the network's first layer "
                       r"\(Conv2d\) expects 2"):
        conv(torch.rand(4, 1, 6, 6), None)


# --- dtypes ------------------------------------------------------------------------------------

def test_surrogate_refuses_integer_images_with_the_division():
    x = (torch.rand(2, *SHAPE) * 255).to(torch.uint8)
    with pytest.raises(InputShapeError, match=r"input must be a float tensor scaled to \[0, 1\], "
                       r"got torch\.uint8; convert it with x\.float\(\) / 255"):
        surrogate(x)
    with pytest.raises(InputShapeError, match=r"got torch\.int64; convert it with x\.float\(\)"):
        surrogate(torch.ones(2, *SHAPE, dtype=torch.long))


@pytest.mark.parametrize("runner", EXPORTED)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64])
def test_exported_nets_refuse_integer_images_by_range(runner, dtype):
    x = torch.arange(288).remainder(256).view(2, *SHAPE).to(dtype)
    with pytest.raises(InputShapeError, match=RANGE.format(0, 255)):
        RUNNERS[runner](x)


def test_surrogate_names_a_float_dtype_mismatch():
    with pytest.raises(InputShapeError, match=r"input is torch\.float64 but the model is "
                       r"torch\.float32; convert one of them, e.g\. x\.to\(torch\.float32\)"):
        surrogate(torch.rand(2, *SHAPE, dtype=torch.float64))
    assert cnn().double()(torch.rand(2, *SHAPE, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize("runner", RUNNERS)
def test_bool_input_is_read_as_0_and_1(runner):
    x = torch.rand(3, *SHAPE) > 0.5
    assert torch.equal(RUNNERS[runner](x), RUNNERS[runner](x.float()))


@pytest.mark.parametrize("runner", EXPORTED)
def test_exported_nets_read_integer_0_1_input_as_values(runner):
    x = torch.rand(3, *SHAPE) > 0.5
    assert torch.equal(RUNNERS[runner](x.long()), RUNNERS[runner](x.float()))


def test_relu_twin_checks_its_input_too():
    net = small_cnn(in_shape=SHAPE, channels=(4, 8), hidden=16, activation="relu").eval()
    with pytest.raises(InputShapeError, match=RANGE.format(r"-[\d.]+", r"[\d.]+")):
        net(torch.randn(2, *SHAPE))
    with pytest.raises(InputShapeError, match=NON_FINITE):
        net(with_value(math.nan))
    assert torch.equal(net(torch.ones(2, *SHAPE).bool()), net(torch.ones(2, *SHAPE)))


# --- boundaries pass ---------------------------------------------------------------------------

@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("fill", ["zeros", "ones", "both"])
def test_exact_0_and_1_pass(runner, fill):
    x = {"zeros": torch.zeros(2, *SHAPE), "ones": torch.ones(2, *SHAPE),
         "both": (torch.arange(288).view(2, *SHAPE) % 2).float()}[fill]
    logits = RUNNERS[runner](x)
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()


@pytest.mark.parametrize("runner", EXPORTED)
def test_exported_nets_agree_with_the_surrogate_at_the_boundaries(runner):
    x = torch.cat([torch.zeros(1, *SHAPE), torch.ones(1, *SHAPE), torch.rand(2, *SHAPE)])
    torch.testing.assert_close(RUNNERS[runner](x), surrogate(x), rtol=1e-4, atol=1e-5)


def test_empty_batch_passes_the_value_check():
    assert surrogate(torch.zeros(0, *SHAPE)).shape == (0, 10)


# --- where and how often the check runs --------------------------------------------------------

def test_surrogate_checks_once_per_forward(monkeypatch):
    calls = []
    original = layers.check_intensities
    monkeypatch.setattr(layers, "check_intensities", lambda x, *a: calls.append(x.shape)
                        or original(x, *a))
    net = cnn()
    net(torch.rand(2, *SHAPE))
    assert calls == [(2, *SHAPE)]  # the input only: not again by the network, not hidden layers


@pytest.mark.parametrize("adapter, convert", [(tsnn, tsnn.to_snntorch),
                                              (tnorse, tnorse.to_norse)])
def test_exported_nets_check_values_once_per_run(monkeypatch, adapter, convert):
    calls = []
    original = timestep.check_intensities
    monkeypatch.setattr(timestep, "check_intensities", lambda x, *a: calls.append(x.shape)
                        or original(x, *a))
    net = convert(cnn())
    adapter.simulate(net, torch.rand(2, *SHAPE))
    adapter.simulate(net, torch.rand(3, *SHAPE))
    assert calls == [(2, *SHAPE), (3, *SHAPE)]  # step 0 of each run, layer 0 only


def test_nan_in_a_later_run_of_an_snntorch_net_is_refused():
    net = tsnn.to_snntorch(cnn())
    tsnn.simulate(net, torch.rand(2, *SHAPE))
    x = with_value(math.nan)
    steps = tsnn.num_steps(net)
    with pytest.raises(InputShapeError, match=NON_FINITE):  # a new run starts, then refuses
        for step in range(steps):
            net(x if step == 0 else torch.zeros_like(x))


def test_hidden_layers_take_any_current():
    cell = tnorse.TTFSCell(1, T=4)
    current = torch.tensor([[-3.0, 0.5, 7.0]])
    state = None
    for step in range(8):
        _, state = cell(current if step == 4 else torch.zeros_like(current), state)
    assert torch.equal(state.mem, current)


def test_norse_functional_core_and_snncell_forward_check_layer_0():
    p = tnorse.TTFSParameters(0, 4, 3.0, 0.0)
    with pytest.raises(InputShapeError, match=NON_FINITE):
        tnorse.ttfs_feed_forward_step(torch.tensor([[math.nan, 0.5]]), None, p)
    ranged = p._replace(check_range=True)
    with pytest.raises(InputShapeError, match=RANGE.format(0, 2)):
        tnorse.ttfs_feed_forward_step(torch.tensor([[0.0, 2.0]]), None, ranged)
    cell = tnorse.TTFSCell(0, T=4, check_range=True)
    assert cell.p.check_range
    with pytest.raises(InputShapeError, match=RANGE.format(0, 255)):
        SNNCell.forward(cell, torch.tensor([[0.0, 255.0]]), None)
    with pytest.raises(InputShapeError, match=RANGE.format(0, 2)):
        cell(torch.tensor([[0, 1, 2]]), None)


def test_converted_and_loaded_input_layers_check_the_range(tmp_path):
    for adapter, net in ((tsnn, tsnn.to_snntorch(cnn())), (tnorse, tnorse.to_norse(cnn()))):
        first, *rest = neurons_of(net)
        assert first.check_range and not any(m.check_range for m in rest)
        assert "check_range=True" in repr(first)
        adapter.save(net, tmp_path / "net.pt")
        again = adapter.load(tmp_path / "net.pt")
        with pytest.raises(InputShapeError, match=RANGE.format(r"-[\d.]+", r"[\d.]+")):
            adapter.simulate(again, torch.randn(2, *SHAPE))


@pytest.mark.parametrize("make", [lambda **kw: tsnn.TTFSNeuron(0, T=4, **kw),
                                  lambda **kw: tnorse.TTFSCell(0, T=4, **kw)],
                         ids=["snntorch", "norse"])
def test_a_hand_built_layer_0_takes_any_finite_value_but_never_nan(make):
    x = torch.tensor([[-0.5, 0.5, 1.5]])  # pruned, quantised, clipped: all defined
    spikes, state = make()(x, None)
    assert torch.equal(state.mem, x)
    with pytest.raises(InputShapeError, match=NON_FINITE):
        make()(torch.tensor([[0.5, math.inf]]), None)
    with pytest.raises(InputShapeError, match=RANGE.format("-0.5", "1.5")):
        make(check_range=True)(x, None)
    with pytest.raises(ValueError, match="check_range applies to layer 0"):
        tsnn.TTFSNeuron(1, check_range=True)


# --- spike-train input -------------------------------------------------------------------------

@pytest.mark.parametrize("adapter, convert", [(tsnn, tsnn.to_snntorch),
                                              (tnorse, tnorse.to_norse)])
def test_spike_train_input(adapter, convert):
    model = cnn()
    net = convert(model, input_mode="spikes")
    x = torch.rand(2, *SHAPE)
    train = adapter.input_spike_train(x, net)
    assert torch.equal(adapter.simulate(net, train).logits,
                       adapter.simulate(convert(model), x).logits)
    for bad in (train * 255, train.masked_fill(train == 0, math.nan), train - 0.5):
        with pytest.raises(InputShapeError, match="spike-train input must be 0 or 1"):
            adapter.simulate(net, bad)
    with pytest.raises(InputShapeError, match="3 channels where the network's first layer"):
        adapter.simulate(net, adapter.input_spike_train(torch.rand(2, 3, 12, 12), net))
    for bad, message in ((x * 255, RANGE.format(r"[\d.]+", r"[\d.]+")),
                         (with_value(math.nan), NON_FINITE)):
        with pytest.raises(InputShapeError, match=message):
            adapter.input_spike_train(bad, net)  # the encoder's train of bad data: refused too
