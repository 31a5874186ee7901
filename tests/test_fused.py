"""The fused TTFS activation (``ttfs_plugin.ops``) against the PyTorch reference (issue 13,
item 1): spike times and ``x`` bit-exact, ``dL/dz`` bit-exact, kernel gradients within 1e-6
relative; at most ``z`` and a uint8 ``t`` saved for backward; a clean fall-back."""

import os
import subprocess
import sys
import warnings

import pytest
import torch

from ttfs_plugin import functional as F
from ttfs_plugin import ops
from ttfs_plugin.errors import ConfigError
from ttfs_plugin.kernel import QUANTIZERS, kernel_table, threshold_table
from ttfs_plugin.ops import cpu

DTYPES = (torch.float32, torch.float64)


def activation(z, backend, T, grad_mode="ste", quantizer="ceil", tau=7.3, td=0.4, theta0=0.9,
               seed=0):
    """``(x, dL/dz, dL/dtau, dL/dtd)`` through one backend."""
    z = z.detach().clone().requires_grad_()
    tau_t = torch.tensor(tau, requires_grad=True)
    td_t = torch.tensor(td, requires_grad=True)
    with ops.use_backend(backend):
        x = F.ttfs_activation(z, tau_t, td_t, T, theta0, grad_mode, quantizer)
        g = torch.randn(x.shape, dtype=x.dtype, generator=torch.Generator().manual_seed(seed))
        grads = torch.autograd.grad(x, (z, tau_t, td_t), g)
    return (x.detach(), *grads)


def inputs(T, dtype, quantizer="ceil", tau=7.3, td=0.4, theta0=0.9, n=20_000):
    """Random values in every region, every threshold exactly and one ulp either side, NaN and
    the infinities, zero and negatives (an odd count, so the vector loops leave a tail)."""
    gen = torch.Generator().manual_seed(T)
    thr = threshold_table(torch.tensor(tau), torch.tensor(td), T, theta0, quantizer).to(dtype)
    top = float(thr[0]) * 1.5
    z = torch.rand(n, generator=gen, dtype=dtype) * (top + 0.2) - 0.2
    special = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1e-45],
                           dtype=dtype)
    return torch.cat([z, thr, torch.nextafter(thr, torch.zeros_like(thr)),
                      torch.nextafter(thr, torch.full_like(thr, 10.0)), special])


@pytest.fixture(scope="module", autouse=True)
def _fused_kernel_is_built():
    if cpu.library() is None:
        pytest.fail(f"the fused CPU kernel did not build here: {cpu.failure()}")


def assert_matches(fused, reference):
    x_f, dz_f, dtau_f, dtd_f = fused
    x_r, dz_r, dtau_r, dtd_r = reference
    assert torch.equal(x_f, x_r)
    assert torch.equal(dz_f, dz_r)
    for got, want in ((dtau_f, dtau_r), (dtd_f, dtd_r)):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-12)


def assert_forward_matches_reference(z, thr, padded_kernel):
    x_f, t_f = ops.ttfs_forward(z, thr, padded_kernel)
    with ops.use_backend("reference"):
        x_r, t_r = ops.ttfs_forward(z, thr, padded_kernel)
    assert torch.equal(t_f, t_r)
    assert torch.equal(x_f, x_r)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("quantizer", QUANTIZERS)
@pytest.mark.parametrize("grad_mode", F.GRAD_MODES)
@pytest.mark.parametrize("T", [2, 7, 32, 64, 65, 255, 256, 300])
def test_fused_equals_the_reference(T, grad_mode, quantizer, dtype):
    z = inputs(T, dtype, quantizer)
    assert_matches(activation(z, "fused", T, grad_mode, quantizer),
                   activation(z, "reference", T, grad_mode, quantizer))


@pytest.mark.parametrize("quantizer", QUANTIZERS)
@pytest.mark.parametrize("grad_mode", F.GRAD_MODES)
@pytest.mark.parametrize("T", [7, 32, 300])
def test_the_portable_loops_equal_the_reference_too(T, grad_mode, quantizer):
    """Where the CPU has no AVX2 (or on ARM) the kernel runs its portable vector loops."""
    z = inputs(T, torch.float32, quantizer)
    with cpu.portable_loops():
        fused = activation(z, "fused", T, grad_mode, quantizer)
    assert_matches(fused, activation(z, "reference", T, grad_mode, quantizer))


@pytest.mark.parametrize("dtype", DTYPES)
def test_spike_times_equal_the_reference_for_every_window_up_to_255_and_beyond(dtype):
    for T in [*range(2, 257), 511, 1000]:
        thr = threshold_table(torch.tensor(3.0), torch.tensor(0.5), T, 1.0).to(dtype)
        kern = torch.cat([kernel_table(torch.tensor(3.0), torch.tensor(0.5), T).to(dtype),
                          torch.zeros(1, dtype=dtype)])
        z = torch.cat([torch.rand(257, dtype=dtype) * 6 - 1, thr,
                       torch.tensor([float("nan"), float("inf")], dtype=dtype)])
        x_r, t_r = ops.reference.forward(z, thr, kern)
        x_f, t_f = cpu.forward(z, thr, kern)
        assert t_f.dtype == t_r.dtype == ops.spike_time_dtype(T)
        assert torch.equal(t_f, t_r), T
        assert torch.equal(x_f, x_r), T


def test_kernel_gradients_do_not_depend_on_the_thread_count():
    z = torch.rand(300_000) * 2
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = activation(z, "fused", 32)
        torch.set_num_threads(2)
        two = activation(z, "fused", 32)
    finally:
        torch.set_num_threads(before)
    for a, b in zip(one, two):
        assert torch.equal(a, b)


def test_a_shaped_non_contiguous_input_keeps_its_shape():
    z = (torch.rand(4, 6, 5) * 2).transpose(0, 2)
    fused = activation(z, "fused", 16)
    reference = activation(z, "reference", 16)
    assert fused[0].shape == fused[1].shape == z.shape
    assert_matches(fused, reference)


@pytest.mark.parametrize("grad_mode", F.GRAD_MODES)
def test_saved_for_backward_is_at_most_z_and_a_byte_per_neuron(grad_mode):
    z = (torch.rand(64, 1000) * 2).requires_grad_()
    saved = []

    def pack(tensor):
        saved.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        F.ttfs_activation(z, torch.tensor(7.0, requires_grad=True),
                          torch.tensor(0.0, requires_grad=True), 32, 1.0, grad_mode)
    big = [t for t in saved if t.numel() >= z.numel()]
    small = [t for t in saved if t.numel() < z.numel()]
    assert sum(t.numel() for t in small) < 100  # the tables and the two kernel parameters
    expected = [torch.float32, torch.uint8] if grad_mode == "ste" else [torch.uint8]
    assert sorted((t.dtype for t in big), key=str) == expected  # z (ste only) and t
    assert sum(t.numel() * t.element_size() for t in big) <= \
        z.numel() * (1 + (z.element_size() if grad_mode == "ste" else 0))


def test_half_precision_inputs_run_in_float32_through_the_fused_kernel():
    z = torch.rand(1000) * 2
    fused = activation(z.bfloat16(), "fused", 32)
    reference = activation(z.bfloat16(), "reference", 32)
    assert fused[0].dtype == torch.float32
    assert_matches(fused, reference)


def test_the_reference_is_chosen_by_environment_variable(monkeypatch):
    z = torch.rand(10)
    assert ops.backend_for(z) == "cpu"
    monkeypatch.setenv(ops.FUSED_ENV, "0")
    assert ops.backend_for(z) == "reference"
    with ops.use_backend("fused"):  # an explicit choice beats the environment
        assert ops.backend_for(z) == "cpu"
    with pytest.raises(ConfigError, match="unknown TTFS activation backend 'gpu'; choose one"):
        with ops.use_backend("gpu"):
            pass


def test_without_a_compiler_it_warns_once_and_runs_the_reference(monkeypatch, tmp_path):
    monkeypatch.setenv(cpu.KERNEL_DIR_ENV, str(tmp_path))  # nothing built there
    monkeypatch.setattr(cpu, "_compiler", lambda: None)
    monkeypatch.setattr(cpu, "_tried", False)
    monkeypatch.setattr(cpu, "_library", None)
    monkeypatch.setattr(cpu, "_failure", None)
    z = torch.rand(1000) * 2
    with pytest.warns(RuntimeWarning, match="no C compiler found.*PyTorch reference"):
        assert ops.backend_for(z) == "reference"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once, not at every call
        got = activation(z, "fused", 32)
    assert_matches(got, activation(z, "reference", 32))
    assert "no C compiler" in cpu.failure()


def test_a_failed_build_leaves_no_file_behind(monkeypatch, tmp_path):
    broken = tmp_path / "broken.c"
    broken.write_text("this is not C\n")
    monkeypatch.setenv(cpu.KERNEL_DIR_ENV, str(tmp_path / "kernels"))
    with pytest.raises(RuntimeError, match="failed"):
        cpu.build(broken)
    assert list((tmp_path / "kernels").iterdir()) == []


TRITON_CHECK = r"""
import torch
from ttfs_plugin import ops
from ttfs_plugin.errors import ConfigError
from ttfs_plugin.ops import cuda, reference
from ttfs_plugin.kernel import kernel_table, threshold_table
for dtype in (torch.float32, torch.float64):
    for T, quantizer in ((32, "ceil"), (17, "round"), (300, "ceil")):
        tau, td = torch.tensor(6.0), torch.tensor(0.3)
        thr = threshold_table(tau, td, T, 0.9, quantizer).to(dtype)
        kern = torch.cat([kernel_table(tau, td, T).to(dtype), torch.zeros(1, dtype=dtype)])
        z = torch.cat([torch.rand(3001, dtype=dtype) * 2 - 0.2, thr,
                       torch.tensor([float("nan"), float("inf"), -float("inf")], dtype=dtype)])
        x_r, t_r = reference.forward(z, thr, kern)
        x_c, t_c = cuda.forward(z, thr, kern)
        assert torch.equal(t_c, t_r) and torch.equal(x_c, x_r), (dtype, T)
        g = torch.randn(z.shape, dtype=dtype)
        for ste in (True, False):
            gz_r, s_r = reference.backward(g, z, t_r, kern, 0.9, ste, True)
            gz_c, s_c = cuda.backward(g, z, t_r, kern, 0.9, ste, True)
            assert torch.equal(gz_c, gz_r), (dtype, T, ste)
            torch.testing.assert_close(s_c, s_r, rtol=1e-9, atol=1e-9)
print("triton kernels match")
"""


@pytest.mark.skipif(not ops.cuda.available(), reason="Triton is not installed")
def test_the_triton_kernels_match_the_reference_in_the_interpreter():
    # No GPU here: Triton's interpreter runs the CUDA kernels on CPU tensors, op for op.
    env = dict(os.environ, TRITON_INTERPRET="1")
    done = subprocess.run([sys.executable, "-c", TRITON_CHECK], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "triton kernels match" in done.stdout


def test_a_failing_triton_kernel_is_given_up_for_the_reference(monkeypatch):
    # No GPU here: pretend the activation was on CUDA and Triton failed to compile.
    def broken(*args):
        raise RuntimeError("PTX assembly failed")

    monkeypatch.setattr(ops.cuda, "_failure", None)
    monkeypatch.setattr(ops, "backend_for", lambda like: "cuda")
    monkeypatch.setattr(ops.cuda, "forward", broken)
    z = torch.rand(1000) * 2
    with pytest.warns(RuntimeWarning, match="Triton.*PTX assembly failed.*PyTorch reference"):
        x, t = ops.ttfs_forward(z, *_tables(32))
    assert torch.equal(x, ops.reference.forward(z, *_tables(32))[0])
    assert "PTX assembly failed" in ops.cuda.failure()
    assert not ops.cuda.supports(z)


def test_other_kernel_errors_are_not_swallowed(monkeypatch):
    def broken(*args):
        raise RuntimeError("a real bug")

    monkeypatch.setattr(cpu, "forward", broken)
    monkeypatch.setitem(ops._IMPLEMENTATIONS, "cpu", cpu)
    with pytest.raises(RuntimeError, match="a real bug"):
        ops.ttfs_forward(torch.rand(10), *_tables(32))


def _tables(T):
    thr = threshold_table(torch.tensor(5.0), torch.tensor(0.0), T)
    return thr, torch.cat([kernel_table(torch.tensor(5.0), torch.tensor(0.0), T),
                           torch.zeros(1)])


def _child_uses_the_kernel_pool(queue):
    done = []
    cpu.run_calls([lambda: done.append(1), lambda: done.append(2)])  # two calls: the thread pool
    queue.put(sorted(done))


@pytest.mark.skipif(not hasattr(os, "register_at_fork"), reason="no fork on this platform")
def test_a_forked_child_gets_a_fresh_kernel_thread_pool():
    import multiprocessing

    cpu.run_calls([lambda: None, lambda: None])  # the parent's pool now has threads
    assert cpu._pool is not None
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child_uses_the_kernel_pool, args=(queue,))
    child.start()
    child.join(timeout=60)
    if child.exitcode is None:
        child.kill()
    assert child.exitcode == 0 and queue.get(timeout=5) == [1, 2]


@pytest.mark.parametrize("grad_mode", F.GRAD_MODES)
def test_an_empty_batch_goes_through_forward_and_backward(grad_mode):
    z = torch.rand(0, 3, 4)
    fused = activation(z, "fused", 16, grad_mode)
    assert fused[0].shape == fused[1].shape == (0, 3, 4)
    assert fused[2] == 0 and fused[3] == 0


@pytest.mark.parametrize("quantizer", QUANTIZERS)
@pytest.mark.parametrize("T", [2, 32, 255, 300])
@pytest.mark.parametrize("tau,td", [(0.3, 0.0), (1.0, -5.0), (3.0, 3.0), (10.0, 0.0),
                                    (50.0, 0.7), (400.0, 0.0), (5000.0, 2.0)])
def test_float32_bucket_forward_equals_the_reference_for_every_kernel_shape(T, tau, td,
                                                                            quantizer):
    """The float32 forward reads a bucket table built per call from the thresholds; kernels
    from very steep to nearly flat (where it falls back to comparing) give the reference's t."""
    z = inputs(T, torch.float32, quantizer, tau=tau, td=td, theta0=1.0)
    thr = threshold_table(torch.tensor(tau), torch.tensor(td), T, 1.0, quantizer)
    kern = kernel_table(torch.tensor(tau), torch.tensor(td), T)
    assert_forward_matches_reference(z, thr, torch.cat([kern, kern.new_zeros(1)]))


def test_the_default_kernels_take_the_bucket_table_and_odd_tables_the_comparisons():
    for tau, T in ((10.0, 32), (2.0, 255), (40.0, 1000)):
        assert cpu.uses_buckets(threshold_table(torch.tensor(tau), torch.tensor(0.0), T, 1.0))
    served = {(4.0, 2.0, 2.0, 2.0, 1.0): True,  # equal entries (a floored table's tail)
              (3.0, 1.0, 0.0): False,  # not positive
              (float("inf"), 1.0, 0.5): False,  # not finite
              (1.0, 1.0 - 2**-24, 0.5): False}  # closer than a bucket can be
    for table, buckets in served.items():
        thr = torch.tensor(table)
        assert cpu.uses_buckets(thr) == buckets
        z = torch.cat([torch.linspace(-1, 5, 10_001), thr, torch.nextafter(thr, -thr.abs() - 1)])
        assert_forward_matches_reference(z, thr, torch.linspace(1, 0.1, len(table) + 1))


def test_plain_eager_calls_skip_the_dispatcher_with_the_same_results():
    """In plain eager mode the activation calls the kernel directly; through the custom op (as
    torch.compile and dispatch modes see it) every output is the same."""
    z = inputs(32, torch.float32)
    thr = threshold_table(torch.tensor(7.3), torch.tensor(0.4), 32, 0.9)
    kern = kernel_table(torch.tensor(7.3), torch.tensor(0.4), 32)
    padded = torch.cat([kern, kern.new_zeros(1)])
    assert ops._plain_eager(z)
    direct = ops.activation_forward(z, thr, padded)
    dispatched = ops.ttfs_forward(z, thr, padded)
    assert all(torch.equal(a, b) for a, b in zip(direct, dispatched, strict=True))
    g = torch.randn_like(z)
    args = (z, direct[1], padded, 0.9, True, True)
    direct_b, dispatched_b = ops.activation_backward(g, *args), ops.ttfs_backward(g, *args)
    assert all(torch.equal(a, b) for a, b in zip(direct_b, dispatched_b, strict=True))


def test_kernel_gradients_in_floats_equal_the_tensor_formula():
    sums = torch.tensor([3.25, -1.5, 40.125, -2.75], dtype=torch.float64)
    tau, td = torch.tensor(7.3), torch.tensor(0.4)
    for ste in (True, False):
        got = ops.kernel_gradients(sums, tau, td, ste)  # CPU: Python floats
        want = ops._kernel_gradient_formula(*sums.unbind(), tau.double(), td.double(), ste)
        for g, w in zip(got, want, strict=True):
            assert g.dtype == tau.dtype
            assert g.item() == w.float().item()


def test_a_layers_trainable_kernel_takes_the_float_path(monkeypatch):
    """``tau``/``td`` are ``nn.Parameter`` s in a network: plain enough for the float path,
    which gives the tensor path's gradients bit for bit."""
    from ttfs_plugin.models import small_cnn

    torch.manual_seed(0)
    model, x = small_cnn(channels=(4, 8), hidden=16, T=8), torch.rand(4, 1, 28, 28)
    kinds = []
    formula = ops._kernel_gradient_formula
    monkeypatch.setattr(ops, "_kernel_gradient_formula",
                        lambda *a, **k: kinds.append(type(a[0])) or formula(*a, **k))
    grads = []
    for plain in ((torch.Tensor, torch.nn.Parameter), (torch.Tensor,)):
        monkeypatch.setattr(ops, "_PLAIN_TYPES", plain)
        model.zero_grad()
        model(x).square().sum().backward()
        grads.append([p.grad.clone() for n, p in model.named_parameters()
                      if n.endswith(("tau", "td"))])
    assert kinds == [float] * 4 + [torch.Tensor] * 4
    assert all(torch.equal(a, b) for a, b in zip(*grads, strict=True))


def test_kernel_gradients_of_a_zero_tau_are_infinite_not_an_exception():
    sums = torch.tensor([1.0, 0.5, 2.0, -1.0], dtype=torch.float64)
    grad_tau, grad_td = ops.kernel_gradients(sums, torch.tensor(0.0), torch.tensor(0.0), True)
    assert not torch.isfinite(grad_tau) and not torch.isfinite(grad_td)


def test_under_a_dispatch_mode_the_custom_op_runs():
    """A FakeTensorMode (shape inference, export) sees the custom op and its fake kernel."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        z = torch.empty(4, 8, requires_grad=True)
        assert not ops._plain_eager(z)
        x = F.ttfs_activation(z, torch.tensor(10.0), torch.tensor(0.0), 32)
        x.sum().backward()
        assert x.shape == (4, 8) and z.grad.shape == (4, 8)
