"""``ttfs_plugin.conv.Conv2d``: ``nn.Conv2d`` with a GEMM + col2im input gradient for inputs of
one to three channels (the encoder's trainable kernel needs conv1's input gradient)."""

import pytest
import torch
from torch import nn

from ttfs_plugin.conv import GEMM_INPUT_GRAD_MAX_CHANNELS, Conv2d
from ttfs_plugin.models import small_cnn


def pair(in_channels, out_channels, kernel, stride, padding, bias):
    torch.manual_seed(0)
    ours = Conv2d(in_channels, out_channels, kernel, stride, padding, bias=bias)
    plain = nn.Conv2d(in_channels, out_channels, kernel, stride, padding, bias=bias)
    plain.load_state_dict(ours.state_dict())
    return ours, plain


def grads(conv, x, grad_y_seed=1):
    x = x.detach().clone().requires_grad_()
    y = conv(x)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(grad_y_seed))
    params = [p for p in conv.parameters()]
    return y, torch.autograd.grad(y, [x, *params], g)


@pytest.mark.parametrize("in_channels", [1, 2, 3])
@pytest.mark.parametrize("kernel,stride,padding", [(3, 1, 1), (5, 1, 2), (3, 2, 1), (3, 1, 0),
                                                   ((3, 5), (2, 1), (0, 2))])
@pytest.mark.parametrize("bias", [True, False])
def test_same_forward_and_gradients_as_nn_conv2d(in_channels, kernel, stride, padding, bias):
    ours, plain = pair(in_channels, 6, kernel, stride, padding, bias)
    x = torch.rand(4, in_channels, 13, 11)
    y_ours, g_ours = grads(ours, x)
    y_plain, g_plain = grads(plain, x)
    assert y_ours.grad_fn.name() == "_GemmInputGradConv2dBackward"  # the GEMM route
    assert torch.equal(y_ours, y_plain)  # the forward is F.conv2d itself
    for got, want in zip(g_ours, g_plain, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_the_gemm_input_gradient_passes_gradcheck():
    ours, _ = pair(2, 3, 3, 2, 1, True)
    ours = ours.double()
    x = torch.rand(2, 2, 7, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(ours, (x,))


@pytest.mark.parametrize("case", ["many channels", "no input grad", "no_grad", "unbatched",
                                  "groups", "dilation"])
def test_other_convolutions_are_plain_nn_conv2d(case):
    channels = GEMM_INPUT_GRAD_MAX_CHANNELS + 1 if case == "many channels" else 2
    kwargs = {"groups": 2} if case == "groups" else {"dilation": 2} if case == "dilation" else {}
    conv = Conv2d(channels, 4, 3, padding=1, **kwargs)
    x = torch.rand(3, channels, 8, 8, requires_grad=case != "no input grad")
    if case == "unbatched":
        x = x[0]
    assert not conv._gemm_input_grad(x) or case == "no_grad"
    with torch.set_grad_enabled(case != "no_grad"):
        y = conv(x)
    assert y.grad_fn is None or "Gemm" not in y.grad_fn.name()


def test_the_encoder_kernel_gradient_is_the_one_through_nn_conv2d():
    """A surrogate CNN's conv1 takes the GEMM route (its input, the encoder's spike values,
    needs a gradient for the encoder's tau and td); every gradient matches the plain conv's."""
    torch.manual_seed(0)
    net = small_cnn(channels=(8, 8), hidden=16)
    twin = small_cnn(channels=(8, 8), hidden=16)
    twin.conv1 = nn.Conv2d(1, 8, 3, 1, 1, bias=False)
    twin.load_state_dict(net.state_dict())
    x, y = torch.rand(16, 1, 28, 28), torch.randint(0, 10, (16,))
    for model in (net, twin):
        nn.functional.cross_entropy(model(x), y).backward()
    assert isinstance(net.conv1, Conv2d)
    for (name, p), q in zip(net.named_parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-6, msg=name)
    assert net.input.kernel.tau.grad.abs() > 0


def test_the_benchmark_prints_a_row_per_shape(capsys):
    from benchmarks import conv_input_grad

    conv_input_grad.main(["--batch", "2", "--repeats", "1"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + len(conv_input_grad.SHAPES)


def test_torch_func_transforms_take_the_plain_route():
    conv, plain = pair(1, 4, 3, 1, 1, True)
    x = torch.rand(2, 1, 6, 5)
    got = torch.func.grad(lambda inp: conv(inp).sum())(x)
    want = torch.func.grad(lambda inp: plain(inp).sum())(x)
    assert torch.equal(got, want)
    jac = torch.func.jacrev(lambda inp: conv(inp).sum(dim=(1, 2, 3)))(x)
    assert jac.shape == (2, 2, 1, 6, 5)


def test_under_cpu_autocast_the_plain_route_runs_in_bf16():
    conv, plain = pair(1, 4, 3, 1, 1, True)
    x = torch.rand(2, 1, 6, 5, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(x)
    assert y.dtype == torch.bfloat16 and "Gemm" not in y.grad_fn.name()
    y.float().sum().backward()
    assert x.grad.shape == x.shape and conv.weight.grad.dtype == torch.float32
