"""Helpers the model tests share."""

import torch
from torch import nn

from ttfs_plugin.layers import TemporalKernel
from ttfs_plugin.models import mlp, small_cnn, vgg16


def randomise_batch_norm(model: nn.Module) -> nn.Module:
    """Give every batch norm of ``model`` random running statistics and affine parameters (a
    trained-looking state, so folding them into the weights is tested), and put it in eval."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=gen) * 0.4 - 0.2)
                m.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(n, generator=gen) * 0.6 - 0.1)
    return model.eval()


#: Small networks for simulation tests: a builder (by quantizer) and an input shape.
SIM_NETS = {
    "mlp": (lambda q: mlp(hidden=(24, 16), T=8, tau0=4.0, quantizer=q), (6, 1, 8, 8)),
    "cnn-max": (lambda q: small_cnn(channels=(4, 8), hidden=16, T=8, tau0=4.0, quantizer=q),
                (4, 1, 28, 28)),
    "vgg16-narrow": (lambda q: vgg16(width=1 / 32, T=4, tau0=3.0, quantizer=q), (2, 3, 32, 32)),
    "cnn-analog": (lambda q: small_cnn(channels=(4, 8), hidden=16, T=8, tau0=4.0, quantizer=q,
                                       input_mode="analog"), (4, 1, 28, 28)),
}


def build_sim_net(name, quantizer, dtype, seed=0):
    """``(model, x)``: net ``name`` of :data:`SIM_NETS` with randomised batch norms, kernels
    off their defaults and a random input, in ``dtype``."""
    make, shape = SIM_NETS[name]
    torch.manual_seed(seed)
    model = randomise_batch_norm(make(quantizer)).to(dtype)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, TemporalKernel) and m.tau.requires_grad:  # off the defaults
                m.tau.add_(torch.rand((), generator=gen, dtype=dtype) - 0.5)
                m.td.add_(0.3 * torch.rand((), generator=gen, dtype=dtype) - 0.1)
    return model, torch.rand(*shape, dtype=dtype, generator=gen)


def assert_same_result(a, b):
    """Two simulation results: the same logits and spike times, bit for bit (and dtype)."""
    assert a.logits.dtype == b.logits.dtype and torch.equal(a.logits, b.logits)
    assert a.spike_times.keys() == b.spike_times.keys()
    for name in a.spike_times:
        assert a.spike_times[name].dtype == b.spike_times[name].dtype, name
        assert torch.equal(a.spike_times[name], b.spike_times[name]), name
