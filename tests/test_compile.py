"""Under ``torch.compile`` the surrogate fires and learns exactly as in eager mode (issue 13,
item 2): the threshold and kernel tables are computed eagerly (``functional.eager_tables``),
outside the compiled region, where inductor's fused ``exp`` would differ from eager by a few
ulps; the activation itself is a custom op (``ttfs_plugin.ops``), opaque to the compiler, whose
kernel-gradient sums are added in a fixed order."""

import pytest
import torch

from ttfs_plugin.kernel import QUANTIZERS
from ttfs_plugin.layers import TTFSActivation
from ttfs_plugin.models import small_cnn
from ttfs_plugin.simulation import surrogate_spike_times


def run(module, z):
    z = z.detach().clone().requires_grad_()
    for p in module.parameters():
        p.grad = None
    x = module(z)
    x.backward(torch.linspace(-1, 1, x.numel()).reshape(x.shape))
    kernel = module.kernel if hasattr(module, "kernel") else module._orig_mod.kernel
    return x.detach(), z.grad, kernel.tau.grad.clone(), kernel.td.grad.clone()


@pytest.mark.parametrize("quantizer", QUANTIZERS)
def test_a_compiled_activation_gives_the_eager_values_and_input_gradients(quantizer):
    torch._dynamo.reset()
    act = TTFSActivation(T=32, tau=7.3, td=0.4, quantizer=quantizer)
    gen = torch.Generator().manual_seed(0)
    thresholds = act.kernel.thresholds().detach()
    # random values in every region, and every threshold exactly (where an ulp flips the step)
    z = torch.cat([torch.rand(100_000, generator=gen) * 1.8 - 0.1, thresholds,
                   torch.nextafter(thresholds, torch.zeros_like(thresholds))])
    eager = run(act, z)
    compiled = run(torch.compile(act), z)
    assert torch.equal(compiled[0], eager[0])  # x: every spike time the same
    assert torch.equal(compiled[1], eager[1])  # dL/dz
    assert torch.equal(compiled[2], eager[2])  # dL/dtau
    assert torch.equal(compiled[3], eager[3])  # dL/dtd


def test_a_compiled_network_gives_the_eager_logits_and_spike_times():
    torch._dynamo.reset()
    torch.manual_seed(0)
    net = small_cnn(channels=(4, 8), hidden=16).eval()
    x = torch.rand(16, 1, 28, 28)
    logits, times = surrogate_spike_times(net, x)
    logits_c, times_c = surrogate_spike_times(torch.compile(net), x)
    assert torch.equal(logits_c, logits)
    assert [n.removeprefix("_orig_mod.") for n in times_c] == list(times)
    for got, want in zip(times_c.values(), times.values()):
        assert torch.equal(got, want)


def test_a_network_traced_by_aot_autograd_gives_the_eager_gradients_exactly():
    # AOTAutograd traces forward and backward (the activation's autograd.Function and both custom
    # ops included); run on eager kernels, every parameter's gradient is bit-identical. (With
    # inductor, conv and batch-norm backward are generated code that adds in another order.)
    torch._dynamo.reset()
    torch.manual_seed(0)
    net = small_cnn(channels=(4, 8), hidden=16)
    x = torch.rand(16, 1, 28, 28)

    def gradients(module):
        for p in net.parameters():
            p.grad = None
        out = module(x)
        out.pow(2).sum().backward()
        return out.detach(), [p.grad.clone() for p in net.parameters()]

    logits, eager = gradients(net)
    logits_c, compiled = gradients(torch.compile(net, backend="aot_eager"))
    assert torch.equal(logits_c, logits)
    assert all(torch.equal(c, e) for c, e in zip(compiled, eager))


FIRST_CALL_COMPILED = r"""
import torch
from ttfs_plugin.layers import TTFSActivation
act = TTFSActivation(T=32, tau=7.3, td=0.4)
thresholds = act.kernel.thresholds().detach()
z = torch.cat([torch.rand(20_000, generator=torch.Generator().manual_seed(0)) * 1.8 - 0.1,
               thresholds, torch.nextafter(thresholds, torch.zeros_like(thresholds))])
compiled = torch.compile(act)(z)   # the very first call of the activation is a compiled one
eager = act(z)
assert torch.equal(compiled, eager), int((compiled != eager).sum())
import sys
print("dynamo imported at import:", "torch._dynamo" in sys.modules)
"""


def test_the_first_call_may_be_a_compiled_one_and_importing_does_not_import_dynamo():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", "import sys, ttfs_plugin, ttfs_plugin.models; "
                           "print('torch._dynamo' in sys.modules)"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr[-2000:]
    done = subprocess.run([sys.executable, "-c", FIRST_CALL_COMPILED], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
