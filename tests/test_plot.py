"""ttfs_plugin.plot and the 'ttfs plot' command: every figure renders and is not blank."""

import argparse
import json

import pytest
import torch

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

from ttfs_plugin import plot  # noqa: E402
from ttfs_plugin.checkpoint import save_checkpoint  # noqa: E402
from ttfs_plugin.errors import CheckpointError, ConfigError  # noqa: E402
from ttfs_plugin.kernel import encode  # noqa: E402
from ttfs_plugin.kernel_errors import network_kernel_errors, network_mean  # noqa: E402
from ttfs_plugin.metrics import evaluate  # noqa: E402
from ttfs_plugin.models import (  # noqa: E402
    Dense,
    Flatten,
    NetworkConfig,
    build_network,
    mlp,
    small_cnn,
)
from ttfs_plugin.plot_cli import add_plot_parser, run_plot  # noqa: E402
from ttfs_plugin.simulation import surrogate_spike_times  # noqa: E402


def assert_drawn(path, min_std=0.02, min_ink=0.02):
    """The PNG at ``path`` exists and is not a blank canvas."""
    assert path.is_file(), path
    img = mpimg.imread(str(path))[..., :3]
    assert img.std() > min_std, f"{path.name} looks blank (pixel std {img.std():.4f})"
    background = img[0, 0]
    ink = (abs(img - background).max(-1) > 0.05).mean()
    assert ink > min_ink, f"{path.name}: only {100 * ink:.1f}% of pixels differ from background"


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return mlp(hidden=(32,))


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    return small_cnn(in_shape=(1, 12, 12), channels=(4, 8), hidden=16)


def images(*shape):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(1))


def test_raster_events_put_layer_l_in_window_l_plus_1():
    T = 8
    times = {"input": torch.tensor([[0, 5, T], [1, 1, 1]]),
             "ttfs1": torch.tensor([[[3], [T]], [[0], [0]]])}  # (N, 2, 1): flattened
    events = plot.raster_events(times, T, sample=0)
    assert events["total_steps"] == 3 * T
    assert sorted(zip(events["steps"], events["rows"])) == [(T, 0), (T + 5, 1), (2 * T + 3, 3)]
    assert [(layer["name"], layer["spikes"], layer["offset"]) for layer in events["layers"]] \
        == [("input", 2, 0), ("ttfs1", 1, 3)]
    second = plot.raster_events(times, T, sample=1)
    assert sorted(second["steps"]) == [T + 1] * 3 + [2 * T] * 2
    with pytest.raises(ConfigError, match="out of range"):
        plot.raster_events(times, T, sample=2)
    with pytest.raises(ConfigError, match="ReLU"):
        plot.raster_events({}, T)


def test_an_analog_input_network_s_raster_starts_at_layer_1():
    """Its relay keeps window 0 and emits no spikes: ttfs1 still fires in window 2."""
    torch.manual_seed(0)
    analog = mlp(input_mode="analog").eval()
    from ttfs_plugin.simulation import surrogate_spike_times

    _, times = surrogate_spike_times(analog, torch.rand(1, 1, 8, 8))
    assert list(times) == ["ttfs1", "ttfs2"]
    T = analog.config.T
    events = plot.raster_events(times, T, first_layer=1)
    by_layer = {layer["name"]: layer["index"] for layer in events["layers"]}
    assert by_layer == {"ttfs1": 1, "ttfs2": 2} and events["total_steps"] == 4 * T
    first_rows = [s for s, who in zip(events["steps"], events["layer"]) if who == 1]
    assert first_rows and all(2 * T <= s < 3 * T for s in first_rows)
    with pytest.raises(ConfigError, match="first_layer"):
        plot.raster_events(times, T, first_layer=-1)


def test_raster_events_select_at_most_max_neurons():
    T = 4
    t = torch.full((1, 100), T)
    t[0, 90:] = 2  # only the last ten neurons fire
    for select, spikes_shown in (("first", 0), ("firing", 10), ("spread", None)):
        events = plot.raster_events({"a": t}, T, max_neurons_per_layer=20, select=select)
        assert events["layers"][0]["shown"] == 20
        assert events["layers"][0]["spikes"] == 10
        if spikes_shown is not None:
            assert len(events["steps"]) == spikes_shown
    with pytest.raises(ConfigError, match="selection"):
        plot.raster_events({"a": t}, T, select="best")


def test_spike_raster_from_surrogate_spike_times(net, tmp_path):
    _, times = surrogate_spike_times(net, images(8, 1, 8, 8))
    fig = plot.spike_raster(times, T=net.config.T, sample=3, path=tmp_path / "raster.png")
    assert fig.axes[0].get_xlim() == (0, 3 * net.config.T)
    assert_drawn(tmp_path / "raster.png")
    with pytest.raises(ConfigError, match="window length"):
        plot.spike_raster(times)


def test_spike_raster_from_cnn_simulation(cnn, tmp_path):
    tsnn = pytest.importorskip("ttfs_plugin.snntorch")
    result = tsnn.simulate(tsnn.to_snntorch(cnn), images(2, 1, 12, 12))
    plot.spike_raster(result, max_neurons_per_layer=30, path=tmp_path / "raster.png")
    assert_drawn(tmp_path / "raster.png")


def test_spike_raster_draws_into_given_axes(net, tmp_path):
    fig, ax = plt.subplots()
    _, times = surrogate_spike_times(net, images(2, 1, 8, 8))
    assert plot.spike_raster(times, net.config.T, ax=ax) is fig
    fig.savefig(tmp_path / "mine.png")
    plt.close(fig)
    assert_drawn(tmp_path / "mine.png")


def test_kernel_curves_from_network_and_snapshot(tmp_path):
    cnn = small_cnn(in_shape=(1, 12, 12), channels=(4, 8), hidden=16)
    with torch.no_grad():
        cnn.ttfs1.kernel.tau.fill_(6.0)
        cnn.ttfs2.kernel.td.fill_(2.0)
    snapshot = plot.kernel_snapshot(cnn)
    assert list(snapshot) == ["input", "ttfs1", "ttfs2", "ttfs3"]
    assert snapshot["ttfs1"] == pytest.approx((6.0, 0.0))
    assert snapshot["ttfs2"] == pytest.approx((10.0, 2.0))
    plot.kernel_curves(cnn, path=tmp_path / "kernels.png")
    assert_drawn(tmp_path / "kernels.png")
    plot.kernel_curves(snapshot, T=16, path=tmp_path / "snapshot.png")
    assert_drawn(tmp_path / "snapshot.png")
    with pytest.raises(ConfigError, match="needs the window T"):
        plot.kernel_curves(snapshot)
    with pytest.raises(ConfigError, match="ReLU"):
        plot.kernel_curves(mlp(hidden=(8,), activation="relu"))


def test_kernel_parameters_over_epochs(net, tmp_path):
    snapshots = []
    for epoch in range(5):
        with torch.no_grad():
            net.ttfs1.kernel.tau.fill_(10.0 + epoch)
            net.input.kernel.td.fill_(-0.1 * epoch)
        snapshots.append(plot.kernel_snapshot(net))
    with torch.no_grad():
        net.ttfs1.kernel.tau.fill_(10.0)
        net.input.kernel.td.fill_(0.0)
    fig = plot.kernel_parameters(snapshots, path=tmp_path / "fig5.png")
    tau_line = fig.axes[0].get_lines()[1]  # ttfs1
    assert list(tau_line.get_ydata()) == pytest.approx([10, 11, 12, 13, 14])
    assert_drawn(tmp_path / "fig5.png")
    records = [{"epoch": e + 1, "train_loss": 1.0, "kernels": {k: list(v) for k, v in s.items()}}
               for e, s in enumerate(snapshots)]
    fig = plot.kernel_parameters(json.loads(json.dumps(records)))
    assert list(fig.axes[0].get_lines()[0].get_xdata()) == [1, 2, 3, 4, 5]
    with pytest.raises(ConfigError, match="no kernel values"):
        plot.kernel_parameters([{"epoch": 1, "train_loss": 0.5}])


def test_preactivation_histograms_fig7(cnn, tmp_path):
    x = images(16, 1, 12, 12)
    stats = plot.preactivation_stats(cnn, x)
    assert list(stats) == ["input", "ttfs1", "ttfs2", "ttfs3"]
    for name, s in stats.items():
        assert s["pruned"] + s["quantized"] + s["clipped"] == pytest.approx(1.0)
        thr = getattr(cnn, name).kernel.thresholds()
        t = encode(s["z"], thr)
        assert s["pruned"] == pytest.approx((t == thr.numel()).double().mean().item())
        assert s["floor"] == pytest.approx(thr[-1].item())
        assert s["ceiling"] == pytest.approx(thr[0].item())
    assert stats["input"]["z"].numel() == x.numel()
    fig = plot.preactivation_histograms(cnn, x, path=tmp_path / "fig7.png")
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 4
    assert_drawn(tmp_path / "fig7.png")
    with pytest.raises(ConfigError, match="ReLU"):
        plot.preactivation_histograms(mlp(hidden=(8,), activation="relu"), images(2, 1, 8, 8))


def test_preactivations_keep_the_training_mode(net):
    net.train()
    plot.preactivation_stats(net, images(4, 1, 8, 8))
    assert net.training
    net.eval()


HISTORY = [{"epoch": e, "train_loss": 2.0 / e, "train_accuracy": 0.5 + 0.1 * e,
            "val_accuracy": 0.45 + 0.1 * e, "train_spikes_per_sample": 300.0 - 10 * e,
            "val_spikes_per_sample": 290.0 - 12 * e, "p_relax": 0.5, "regularised": e > 2}
           for e in range(1, 5)]


def test_training_curves_from_list_and_files(tmp_path):
    fig = plot.training_curves(HISTORY, path=tmp_path / "curves.png")
    assert [ax.get_ylabel() for ax in fig.axes] == ["loss", "accuracy (%)", "spikes per sample"]
    assert_drawn(tmp_path / "curves.png")
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"final": {}, "history": HISTORY}))
    assert len(plot.training_curves(run).axes) == 3
    keys = list(HISTORY[0])
    (tmp_path / "metrics.csv").write_text(
        ",".join(keys) + "\n" + "\n".join(",".join(str(r[k]) for k in keys) for r in HISTORY))
    assert plot.load_history(tmp_path / "metrics.csv") == HISTORY
    with pytest.raises(ConfigError, match="does not exist"):
        plot.training_curves(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="empty"):
        plot.training_curves([])


def test_training_curves_of_a_relu_run_have_no_spike_panel(tmp_path):
    relu = [{"epoch": e, "train_loss": 1.0 / e, "train_accuracy": 0.1 * e,
             "train_spikes_per_sample": 0.0} for e in range(1, 4)]
    fig = plot.training_curves(relu, path=tmp_path / "relu.png")
    assert [ax.get_ylabel() for ax in fig.axes] == ["loss", "accuracy (%)"]
    assert "ReLU" in fig.axes[0].get_title()
    assert_drawn(tmp_path / "relu.png")


def test_spikes_per_layer_from_evaluation_and_dict(net, tmp_path):
    x = images(32, 1, 8, 8)
    result = evaluate(net, [(x, torch.zeros(32, dtype=torch.long))])
    fig = plot.spikes_per_layer(result["per_layer"], path=tmp_path / "layers.png")
    assert len(fig.axes) == 2  # the twin axis of spikes per neuron
    heights = [bar.get_height() for bar in fig.axes[0].patches]
    assert heights == pytest.approx([layer["spikes_per_sample"] for layer in result["per_layer"]])
    assert_drawn(tmp_path / "layers.png")
    fig = plot.spikes_per_layer({"input": 30.0, "ttfs1": 12.5}, path=tmp_path / "dict.png")
    assert len(fig.axes) == 1
    assert_drawn(tmp_path / "dict.png")
    assert len(plot.spikes_per_layer(result, neurons=None).axes) == 2
    with pytest.raises(ConfigError, match="ReLU"):
        plot.spikes_per_layer([])


# --------------------------------------------------------------------------- kernel errors

def fresh_cnn():
    """A network of its own for a test that changes its parameters."""
    torch.manual_seed(0)
    return small_cnn(in_shape=(1, 12, 12), channels=(4, 8), hidden=16)


def kernel_error_history(net, epochs=4):
    """Records as the trainer writes them, with the kernels moved a little each epoch."""
    x = images(16, 1, 12, 12)
    records = []
    for epoch in range(1, epochs + 1):
        with torch.no_grad():
            for layer in net.children():
                if hasattr(layer, "kernel"):
                    layer.kernel.td.fill_(0.1 * epoch)
        records.append({"epoch": epoch, "train_loss": 1.0 / epoch,
                        "kernels": plot.kernel_snapshot(net),
                        "kernel_errors": network_kernel_errors(net, x)})
    return json.loads(json.dumps(records))  # as metrics.json gives them back


def test_kernel_error_figures_from_a_history(tmp_path):
    history = kernel_error_history(fresh_cnn())
    fig = plot.kernel_error_overview(history, path=tmp_path / "fig2.png")
    assert_drawn(tmp_path / "fig2.png")
    mean = fig.axes[0].get_lines()[-1]  # the network mean, drawn last
    assert list(mean.get_xdata()) == [1, 2, 3, 4]
    assert list(mean.get_ydata()) == pytest.approx(
        [network_mean(r["kernel_errors"]) for r in history])
    length = fig.axes[1].get_lines()[-1].get_ydata()
    assert length[-1] > length[0]  # td grew: x_max = exp(td/tau) grew, so did the range
    for kind, key in (("max", "max_error"), ("min", "min_error"),
                      ("precision", "precision_error")):
        fig = plot.kernel_error_history(history, kind, path=tmp_path / f"{kind}.png")
        assert_drawn(tmp_path / f"{kind}.png")
        top = fig.axes[0].get_lines()
        assert [line.get_label() for line in top] == ["input", "ttfs1", "ttfs2", "ttfs3"]
        assert list(top[1].get_ydata()) == pytest.approx(
            [r["kernel_errors"]["ttfs1"][key] for r in history])
    with pytest.raises(ConfigError, match="unknown kernel-error figure"):
        plot.kernel_error_history(history, "total")


def test_kernel_error_overview_over_the_initial_x_max():
    runs = {"a": kernel_error_history(fresh_cnn(), 2),
            "b": kernel_error_history(fresh_cnn(), 4)[2:]}
    fig = plot.kernel_error_overview(runs, against="initial_x_max")
    xs = fig.axes[0].get_lines()[0].get_xdata()
    start = [network_mean(runs[r][0]["kernel_errors"], "x_max") for r in ("a", "b")]
    assert list(xs) == pytest.approx(sorted(start))
    with pytest.raises(ConfigError, match="against"):
        plot.kernel_error_overview(runs, against="lr")


def test_kernel_error_figures_need_kernel_errors():
    for draw in (plot.kernel_error_overview, plot.kernel_error_history):
        with pytest.raises(ConfigError, match="records no kernel errors"):
            draw(HISTORY)


def test_kernel_error_curves_fig10(cnn, tmp_path):
    fig = plot.kernel_error_curves(cnn, path=tmp_path / "fig10.png")
    assert_drawn(tmp_path / "fig10.png")
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 4
    ax = fig.axes[1]  # ttfs1: pruned, quantised, clipped
    kernel = cnn.ttfs1.kernel
    pruned, quantised, clipped = (line.get_ydata() for line in ax.get_lines()[:3])
    z = ax.get_lines()[0].get_xdata()
    thr = kernel.thresholds().detach().double()
    assert all(v == pytest.approx(zi / kernel.theta0) for zi, v in zip(z, pruned)
               if zi < thr[-1].item())
    bound = ax.get_lines()[-1].get_ydata()[0]  # the Eq. 13 line
    assert max(v for v in quantised if v == v) <= bound + 1e-9
    with pytest.raises(ConfigError, match="ReLU"):
        plot.kernel_error_curves(mlp(hidden=(8,), activation="relu"))


def test_parameter_distributions_figs14_15(tmp_path):
    cnn = fresh_cnn()
    fig = plot.kernel_parameter_distributions(cnn, path=tmp_path / "fig14.png")
    assert_drawn(tmp_path / "fig14.png")
    assert len(fig.axes[0].collections) == 2 * 4  # initial and current tau of every layer
    with torch.no_grad():
        cnn.bn2.bias.uniform_(-0.5, 0.5)
    fig = plot.batchnorm_distributions(cnn, path=tmp_path / "fig15.png")
    assert_drawn(tmp_path / "fig15.png")
    assert [t.get_text() for t in fig.axes[1].get_xticklabels()] == ["bn1", "bn2", "bn3"]
    floors = [line.get_ydata()[0] for line in fig.axes[1].get_lines()
              if line.get_color() == plot.FLOOR_COLOUR and len(line.get_ydata()) == 2]
    assert floors == pytest.approx([cnn.get_submodule(f"ttfs{i}").firing_floor().item()
                                    for i in (1, 2, 3)])
    with pytest.raises(ConfigError, match="batch norm"):
        plot.batchnorm_distributions(build_network(NetworkConfig(
            [Flatten(), Dense(8, batch_norm=False)], (1, 8, 8), 10)))


def test_fig7_marks_the_mean_beta_of_the_feeding_batch_norm():
    cnn = fresh_cnn()
    with torch.no_grad():
        cnn.bn1.bias.fill_(-0.25)
    assert {n: b[0] for n, b in plot.feeding_norms(cnn).items()} == {
        "ttfs1": "bn1", "ttfs2": "bn2", "ttfs3": "bn3"}
    stats = plot.preactivation_stats(cnn, images(8, 1, 12, 12))
    assert stats["input"]["beta"] is None
    assert stats["ttfs1"]["beta"] == pytest.approx(-0.25)
    fig = plot.preactivation_histograms(cnn, images(8, 1, 12, 12))
    lines = fig.axes[1].get_lines()
    assert lines[0].get_xdata()[0] == pytest.approx(-0.25)
    assert lines[0].get_label().startswith("mean β")
    assert not any(line.get_label().startswith("mean β") for line in fig.axes[0].get_lines())


# --------------------------------------------------------------------------- ttfs plot

#: The paper's figures 'ttfs plot' draws; the last four need the history's kernel errors.
PAPER_FIGURES = ("fig5_kernel_parameters", "fig7_preactivations", "fig10_kernel_errors",
                 "fig14_kernel_parameter_distributions", "fig15_batchnorm_distributions",
                 "fig2_kernel_error_and_range", "fig11_max_error", "fig12_min_error",
                 "fig13_precision_error")
HISTORY_ERROR_FIGURES = PAPER_FIGURES[-4:]


def plot_parser():
    parser = argparse.ArgumentParser(prog="ttfs")
    add_plot_parser(parser.add_subparsers(dest="command", required=True))
    return parser


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from ttfs_plugin.cli import main

    out = tmp_path_factory.mktemp("plot") / "run"
    assert main(["train", "--epochs", "2", "--batch-size", "512", "--out", str(out),
                 "--quiet"]) == 0
    return out


def test_run_plot_writes_every_figure(trained_run, tmp_path, capsys):
    args = plot_parser().parse_args(["plot", str(trained_run), "--out", str(tmp_path / "figs"),
                                     "--samples", "64", "--sample", "3"])
    assert args.command == "plot"
    assert run_plot(args) == 0
    printed = capsys.readouterr().out
    for stem in ("training_curves", "kernels", "spikes_per_layer", "spike_raster",
                 *PAPER_FIGURES):
        path = tmp_path / "figs" / f"{stem}.png"
        assert str(path) in printed
        assert_drawn(path)


def test_run_plot_from_a_checkpoint_file_with_the_surrogate(trained_run, tmp_path):
    parser = plot_parser()
    args = parser.parse_args(["plot", str(trained_run / "checkpoint.pt"), "--out", str(tmp_path),
                              "--samples", "8", "--sample", "8"])
    with pytest.raises(ConfigError, match="out of range"):
        run_plot(args)
    assert not list(tmp_path.iterdir())  # checked before anything is written
    args = parser.parse_args(["plot", str(trained_run / "checkpoint.pt"), "--out", str(tmp_path),
                              "--samples", "8", "--backend", "surrogate", "--dpi", "60"])
    assert run_plot(args) == 0
    assert sorted(p.name for p in tmp_path.glob("*.png")) == sorted(
        [f"{stem}.png" for stem in PAPER_FIGURES]
        + ["kernels.png", "spike_raster.png", "spikes_per_layer.png", "training_curves.png"])
    assert_drawn(tmp_path / "spike_raster.png")


def test_run_plot_of_a_run_without_kernel_errors(trained_run, tmp_path, capsys):
    """A run trained before kernel errors were recorded: a message for Figs. 2, 11–13, the rest
    drawn as before."""
    old = tmp_path / "old"
    old.mkdir()
    (old / "checkpoint.pt").write_bytes((trained_run / "checkpoint.pt").read_bytes())
    metrics = json.loads((trained_run / "metrics.json").read_text())
    for record in metrics["history"]:
        del record["kernel_errors"]
    (old / "metrics.json").write_text(json.dumps(metrics))
    assert run_plot(plot_parser().parse_args(["plot", str(old), "--samples", "16"])) == 0
    err = capsys.readouterr().err
    assert "records no kernel errors" in err and "Figs. 2 and 11–13" in err
    written = {p.stem for p in (old / "plots").glob("*.png")}
    assert not written & set(HISTORY_ERROR_FIGURES)
    assert written == set(PAPER_FIGURES) - set(HISTORY_ERROR_FIGURES) | {
        "kernels", "spike_raster", "spikes_per_layer", "training_curves"}
    for stem in written:
        assert_drawn(old / "plots" / f"{stem}.png")


def test_run_plot_relu_checkpoint_writes_only_training_curves(tmp_path, capsys):
    run = tmp_path / "relu"
    save_checkpoint(run / "checkpoint.pt", mlp(hidden=(8,), activation="relu"), epoch=2,
                    history=[{"epoch": e, "train_loss": 1.0 / e, "train_accuracy": 0.3 * e}
                             for e in (1, 2)], dataset={"name": "digits", "data_dir": None})
    args = plot_parser().parse_args(["plot", str(run)])
    assert run_plot(args) == 0
    assert [p.name for p in (run / "plots").iterdir()] == ["training_curves.png"]
    assert "ReLU" in capsys.readouterr().err
    save_checkpoint(run / "checkpoint.pt", mlp(hidden=(8,), activation="relu"))
    with pytest.raises(CheckpointError, match="ReLU"):
        run_plot(plot_parser().parse_args(["plot", str(run / "checkpoint.pt")]))


def test_run_plot_rejects_missing_and_empty_paths(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        run_plot(plot_parser().parse_args(["plot", str(tmp_path / "missing")]))
    with pytest.raises(ConfigError, match="holds no checkpoint.pt"):
        run_plot(plot_parser().parse_args(["plot", str(tmp_path)]))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        run_plot(plot_parser().parse_args(["plot", str(tmp_path / "junk.pt")]))
