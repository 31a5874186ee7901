"""The TTFS activation under ``torch.func``: ``grad``, ``vmap``, ``jacrev``, per-sample gradients
and ensembles give what plain autograd gives; a second derivative is a clear error, never a
silently missing term."""

import warnings

import pytest
import torch
from _model_helpers import build_sim_net
from torch import nn

from ttfs_plugin.functional import ttfs_activation

SECOND_ORDER = "differentiable once"


def inputs(dtype=torch.float32, n=64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    z = torch.rand(n, generator=gen, dtype=dtype) * 1.6 - 0.1  # clipped, quantized and pruned
    return z, torch.tensor(4.0, dtype=dtype), torch.tensor(0.1, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("grad_mode", ["ste", "decode"])
def test_grad_equals_autograd(grad_mode, dtype):
    z, tau, td = inputs(dtype)
    weights = torch.linspace(-1, 2, len(z), dtype=dtype)

    def loss(z, tau, td):
        return (ttfs_activation(z, tau, td, 8, grad_mode=grad_mode) * weights).sum()
    leaves = [v.clone().requires_grad_() for v in (z, tau, td)]
    loss(*leaves).backward()
    grads = torch.func.grad(loss, argnums=(0, 1, 2))(z, tau, td)
    for leaf, grad in zip(leaves, grads):
        assert torch.equal(leaf.grad, grad)
    assert grads[0].abs().sum() > 0 and grads[1] != 0


def test_vmap_over_inputs_and_over_kernels():
    z, tau, td = inputs()
    batch = torch.stack([z, z.flip(0), z * 0.5])
    assert torch.equal(torch.func.vmap(lambda z: ttfs_activation(z, tau, td, 8))(batch),
                       ttfs_activation(batch, tau, td, 8))
    taus = torch.tensor([2.0, 4.0, 9.0])  # one kernel per ensemble member
    out = torch.func.vmap(lambda tau: ttfs_activation(z, tau, td, 8))(taus)
    assert torch.equal(out, torch.stack([ttfs_activation(z, t, td, 8) for t in taus]))


def test_per_sample_gradients_and_jacobian():
    z, tau, td = inputs()
    batch = torch.stack([z, z.flip(0), z * 0.5])

    def loss(z, tau):
        return (ttfs_activation(z, tau, td, 8) ** 2).sum()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the ops have vmap rules: no slow-fallback warning
        per_sample = torch.func.vmap(torch.func.grad(loss, argnums=(0, 1)),
                                     in_dims=(0, None))(batch, tau)
    for i, sample in enumerate(batch):
        leaf, tau_leaf = sample.clone().requires_grad_(), tau.clone().requires_grad_()
        loss(leaf, tau_leaf).backward()
        assert torch.equal(per_sample[0][i], leaf.grad)
        assert torch.equal(per_sample[1][i], tau_leaf.grad)
    jacobian = torch.func.jacrev(lambda z: ttfs_activation(z, tau, td, 8))(z)
    leaf = z.clone().requires_grad_()
    ttfs_activation(leaf, tau, td, 8).sum().backward()
    assert torch.equal(jacobian.diag(), leaf.grad)  # element-wise: a diagonal Jacobian
    assert torch.equal(jacobian, torch.diag(jacobian.diag()))


def test_a_second_derivative_is_a_clear_error():
    z, tau, td = inputs()
    with pytest.raises(RuntimeError, match="jvp function"):  # forward mode: torch says so
        torch.func.hessian(lambda z: ttfs_activation(z, tau, td, 8).sum())(z)
    with pytest.raises(RuntimeError, match=SECOND_ORDER):
        torch.func.grad(torch.func.grad(lambda tau: ttfs_activation(z, tau, td, 8).sum()))(tau)
    # a gradient penalty whose other terms are differentiable: not a silently dropped term
    leaf, scale = z.clone().requires_grad_(), torch.rand(len(z), requires_grad=True)
    grad, = torch.autograd.grad(ttfs_activation(leaf * scale, tau, td, 8).sum(), leaf,
                                create_graph=True)
    with pytest.raises(RuntimeError, match=SECOND_ORDER):
        (grad.square().sum() + scale.square().sum()).backward()
    tau_leaf = tau.clone().requires_grad_()
    grad_tau, = torch.autograd.grad(ttfs_activation(z, tau_leaf, td, 8).sum(), tau_leaf,
                                    create_graph=True)
    with pytest.raises(RuntimeError, match=SECOND_ORDER):
        grad_tau.backward()


def test_per_sample_gradients_of_a_network_and_an_ensemble():
    model, x = build_sim_net("cnn-max", "ceil", torch.float32)  # eval, with spikes
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = dict(model.named_buffers())
    y = torch.arange(len(x)) % 10

    def loss(params, x, y):
        out = torch.func.functional_call(model, (params, buffers), (x.unsqueeze(0),))
        return nn.functional.cross_entropy(out, y.unsqueeze(0))
    per_sample = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0, 0))(params, x, y)
    for i in range(len(x)):
        model.zero_grad()
        nn.functional.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
        for name, p in model.named_parameters():
            torch.testing.assert_close(per_sample[name][i], p.grad, rtol=1e-4, atol=1e-6,
                                       msg=name)
    for kind in ("tau", "td", "conv1.weight"):
        assert any(per_sample[n].abs().sum() > 0 for n in per_sample if n.endswith(kind)), kind

    members = [build_sim_net("cnn-max", "ceil", torch.float32, seed=s)[0] for s in (0, 5)]
    stacked, stacked_buffers = torch.func.stack_module_state(members)
    outs = torch.func.vmap(lambda p, b: torch.func.functional_call(members[0], (p, b), (x,)))(
        stacked, stacked_buffers)
    for out, member in zip(outs, members):
        torch.testing.assert_close(out, member(x), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(outs[0], outs[1])
