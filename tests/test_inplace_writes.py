"""A user's in-place write into a layer's output is what the next layer reads.

The time-stepped modules hand out tagged tensors: a cached all-zero "silent" output (the next
module skips its work) and spikes that carry their window's spike times (the next pool or
window-batched synapse reads the times, not the values). A write into such a tensor — a hook's
``o.mul_(mask)``, an ablation, ``spk[...] = 1`` — changes its values, so the tag must no longer
be believed: the write is seen downstream exactly as the same values given out of place, and a
written silent tensor is never handed out again.
"""

from __future__ import annotations

import pytest
import torch
from _model_helpers import assert_same_result, build_sim_net

snn = pytest.importorskip("snntorch")

import snntorch.utils  # noqa: E402

from ttfs_plugin import snntorch as tsnn  # noqa: E402
from ttfs_plugin.timestep import reference_path  # noqa: E402


def run_loop(net, x, hook=None, layer="ttfs1", mode=torch.no_grad):
    """A snnTorch user's loop (``snntorch.utils.reset``, then ``net(x_t)`` per step), with
    ``hook`` on ``layer``; returns the logits and what the next layer read from ``layer`` at
    every step (recorded after ``hook``)."""
    module, seen = net.get_submodule(layer), []
    handles = [] if hook is None else [module.register_forward_hook(hook)]
    handles.append(module.register_forward_hook(lambda m, i, o: seen.append(o.clone())))
    snntorch.utils.reset(net)
    try:
        with mode():
            for s in range(tsnn.num_steps(net)):
                out = net(x if s == 0 else torch.zeros_like(x))
    finally:
        for handle in handles:
            handle.remove()
    return out, seen


MODES = {"no_grad": torch.no_grad, "inference_mode": torch.inference_mode}


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("batched", [False, True])
def test_a_mask_written_in_place_acts_as_the_same_mask_out_of_place(batched, mode):
    """Masking a layer's spikes (its fire window, where they carry their times, with a pool
    after it) in place gives what the same mask given out of place gives."""
    model, x = build_sim_net("cnn-max", "ceil", torch.float32)
    net = tsnn.to_snntorch(model, window_batched=batched)
    mask = (torch.rand(x.shape[0], 4, 28, 28, generator=torch.Generator().manual_seed(3))
            > 0.5).float()
    mode = MODES[mode]  # inference mode: the outputs handed out still count their writes
    clean, _ = run_loop(net, x, mode=mode)
    in_place, seen_in = run_loop(net, x, lambda m, i, o: o.mul_(mask), mode=mode)
    out_of_place, seen_out = run_loop(net, x, lambda m, i, o: o * mask, mode=mode)
    assert torch.equal(in_place, out_of_place)
    assert all(torch.equal(a, b) for a, b in zip(seen_in, seen_out))
    assert not torch.equal(in_place, clean)  # the mask mattered


def test_a_write_into_a_silent_output_is_never_handed_out_again():
    """A spike written into a silent step's output (outside the layer's fire window, so no
    synapse reads it) does not come back at later silent steps, nor in later runs."""
    model, x = build_sim_net("cnn-max", "ceil", torch.float32)
    net = tsnn.to_snntorch(model)
    T = model.config.T
    with torch.no_grad():
        reference = tsnn.simulate(net, x)
    calls = [0]

    def poke(module, inputs, output):  # step 3, window 0: ttfs1 is silent
        calls[0] += 1
        if calls[0] == 4:
            output.view(-1)[0] = 1.0

    poked, seen = run_loop(net, x, poke)
    assert seen[3].sum() == 1 and torch.equal(poked, reference.logits)
    # the rest of that run, and a clean run after it (ttfs1 fires in window 2 only)
    for poked_run, run in ((True, seen), (False, run_loop(net, x)[1])):
        silent = [o for s, o in enumerate(run) if s // T != 2 and not (poked_run and s == 3)]
        assert silent and all(not o.any() for o in silent)
    with torch.no_grad():
        assert_same_result(tsnn.simulate(net, x), reference)


@pytest.mark.parametrize("layer, field", [("ttfs1", "mem"), ("ttfs1", "fired"),
                                          ("pool1", "emitted")])
def test_a_state_written_in_place_mid_window_is_read_as_the_reference_rules_read_it(layer,
                                                                                  field):
    """A hook that edits a module's state in place during its fire window (a membrane scaled,
    every neuron or pooled unit marked as done): what follows is the step-by-step rules'."""
    model, x = build_sim_net("cnn-max", "ceil", torch.float32)
    net = tsnn.to_snntorch(model)
    T = model.config.T
    module = net.get_submodule(layer)
    calls = [0]

    def edit(module, inputs):  # before local time 2 of ttfs1's fire window (window 2)
        calls[0] += 1
        if calls[0] == 2 * T + 3 and module.state is not None:
            value = getattr(module.state, field)
            value.mul_(1.5) if field == "mem" else value.fill_(True)

    def run():
        calls[0] = 0
        handle = module.register_forward_pre_hook(edit)
        try:
            return run_loop(net, x, layer=layer)
        finally:
            handle.remove()

    fast_logits, fast_seen = run()
    with reference_path():
        slow_logits, slow_seen = run()
    assert torch.equal(fast_logits, slow_logits)
    assert all(torch.equal(a, b) for a, b in zip(fast_seen, slow_seen))
    clean_logits, clean_seen = run_loop(net, x, layer=layer)
    assert not all(torch.equal(a, b) for a, b in zip(fast_seen, clean_seen))  # it mattered


@pytest.mark.parametrize("native", [False, True])
@pytest.mark.parametrize("backend", ["snntorch", "norse"])
def test_inference_mode_simulates_as_no_grad(backend, native):
    from ttfs_plugin import norse as tnorse

    adapter, convert = {"snntorch": (tsnn, tsnn.to_snntorch),
                        "norse": (tnorse, tnorse.to_norse)}[backend]
    model, x = build_sim_net("cnn-max", "ceil", torch.float32)
    net = convert(model)
    with torch.no_grad():
        expected = adapter.simulate(net, x, native_loop=native)
    with torch.inference_mode():
        result = adapter.simulate(net, x, native_loop=native)
    assert_same_result(result, expected)


@pytest.mark.parametrize("index, field", [(2, "mem"), (2, "fired"), (3, "emitted")])
def test_a_norse_state_written_in_place_between_steps_is_read_as_written(index, field):
    """Norse's own loop, ``out, state = net(x_t, state)``, with a state edited in place in the
    middle of the first hidden layer's fire window: the step-by-step rules' results."""
    from ttfs_plugin import norse as tnorse

    model, x = build_sim_net("cnn-max", "ceil", torch.float32)
    net = tnorse.to_norse(model)
    T = model.config.T

    def run():
        state, outs = None, []
        with torch.no_grad():
            for s in range(tnorse.num_steps(net)):
                out, state = net(x if s == 0 else torch.zeros_like(x), state)
                outs.append(out.clone())
                if s == 2 * T + 2:  # local time 2 of ttfs1's (module 2) fire window
                    value = getattr(state[index], field)
                    value.mul_(1.5) if field == "mem" else value.fill_(True)
        return outs

    fast = run()
    with reference_path():
        slow = run()
    assert all(torch.equal(a, b) for a, b in zip(fast, slow))
