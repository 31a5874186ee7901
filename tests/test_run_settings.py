"""Where a setting comes from (command line > config file > preset > default), typed config
values, refused hyper-parameters, and run folders that never lose a good checkpoint."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
from pathlib import Path

import pytest
import torch

from ttfs_plugin import cli
from ttfs_plugin.checkpoint import load_checkpoint
from ttfs_plugin.cli import main
from ttfs_plugin.errors import ConfigError
from ttfs_plugin.records import Checkpoint
from ttfs_plugin.training import TrainConfig
from ttfs_plugin.training.config import fields_of


def settings(*argv):
    return cli._parse(["train", "--out", "unused", *map(str, argv)]).settings


def toml(tmp_path, text, name="c.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


# --- precedence ---------------------------------------------------------------------------------


def test_command_line_beats_config_beats_preset_beats_default(tmp_path):
    config = toml(tmp_path, "lambda_tb = 2e-4\nepochs = 7\n")
    assert settings("--config", config, "--lambda-tb", 3e-4)["lambda_tb"] == 3e-4
    assert settings("--config", config)["lambda_tb"] == 2e-4
    assert settings()["lambda_tb"] == 1e-4  # the default preset sm+sr+tr+tb
    assert settings("--preset", "sm")["lambda_tb"] == 0.0
    assert settings("--config", config)["epochs"] == 7
    assert settings()["epochs"] == TrainConfig().epochs  # the field default, one place
    preset_in_file = toml(tmp_path, 'preset = "sm"\n', "p.toml")
    assert settings("--config", preset_in_file)["x_max0"] == 2.0
    assert settings("--config", preset_in_file, "--preset", "sm+sr")["x_max0"] == 1.0


def test_td0_and_x_max0_are_one_setting(tmp_path):
    config = toml(tmp_path, "td0 = 0.0\n")
    merged = settings("--config", config, "--x-max0", 2)
    assert merged["x_max0"] == 2.0 and merged["td0"] is None  # the command line wins
    assert settings("--config", config)["td0"] == 0.0
    assert settings("--preset", "sm")["x_max0"] == 2.0
    with pytest.raises(ConfigError, match="both td0 and x_max0"):
        settings("--td0", 1, "--x-max0", 2)
    with pytest.raises(ConfigError, match="config file gives both td0 and x_max0"):
        settings("--config", toml(tmp_path, "td0 = 1.0\nx_max0 = 2.0\n", "both.toml"))


def test_every_training_field_is_a_flag():
    parser = cli._subparser(cli.build_parser(), "train")
    dests = {a.dest for a in parser._actions}
    assert set(fields_of(TrainConfig)) <= dests
    merged = settings("--batch-size", 64, "--no-bf16", "--precise-bn", "--sr-target", "none")
    cfg = TrainConfig.from_dict({k: merged[k] for k in fields_of(TrainConfig)})
    assert (cfg.batch_size, cfg.bf16, cfg.precise_bn, cfg.sr_target) == (64, False, True, None)


@pytest.mark.parametrize("text, message", [
    ("epochs = true", "epochs must be an int, got True"),
    ("epochs = 2.7", "epochs must be an int, got 2.7"),
    ('precise_bn = "no"', "precise_bn must be a bool, got 'no'"),
    ('lr = "fast"', "lr must be a float"),
    ('tb_mode = "magic"', "unknown tb_mode 'magic'"),
    ("colour = 3", "unknown key 'colour'"),
])
def test_config_values_are_typed(tmp_path, capsys, text, message):
    config = toml(tmp_path, text + "\n")
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_an_int_is_a_fine_float(tmp_path):
    assert settings("--config", toml(tmp_path, "lr = 1\n"))["lr"] == 1.0


@pytest.mark.parametrize("flag, value, message", [
    ("--lambda-tb", "nan", "lambda_tb must be a finite number >= 0, got nan"),
    ("--lambda-w", "inf", "lambda_w must be a finite number >= 0, got inf"),
    ("--lr", "-1", "learning rate (lr) must be a finite number > 0"),
    ("--tau0", "nan", "tau0 must be a finite number > 0"),
    ("--x-max0", "0", "x_max0 must be a finite number > 0"),
    ("--epochs", "0", "epochs must be >= 1"),
])
def test_bad_hyper_parameters_are_refused_before_anything_is_written(tmp_path, capsys, flag,
                                                                     value, message):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), flag, value, "--quiet"]) == 2
    assert message in capsys.readouterr().err
    assert not run.exists()


def test_relu_refuses_spiking_only_settings(tmp_path, capsys):
    assert main(["train", "--activation", "relu", "--lambda-tb", "1e-3", "--out",
                 str(tmp_path / "r")]) == 2
    assert "relu has no kernel" in capsys.readouterr().err


def test_the_relu_twin_of_a_bundled_config_as_the_docs_run_it(shared_data, tmp_path, capsys):
    """docs/results.md's twin command: the config's TR and TB refused by name, with the flags
    that turn them off; with those flags it trains."""
    common = ["train", "--config", "mnist_cnn", "--data-dir", str(shared_data / "mnist9k"),
              "--activation", "relu", "--epochs", "1", "--no-precise-bn", "--quiet"]
    assert main([*common, "--out", str(tmp_path / "refused")]) == 2
    err = capsys.readouterr().err
    assert "lambda_tr, lambda_tb cannot apply" in err
    assert "add --lambda-tr 0 --lambda-tb 0" in err
    assert not (tmp_path / "refused").exists()
    out = tmp_path / "twin"
    assert main([*common, "--lambda-tr", "0", "--lambda-tb", "0", "--out", str(out)]) == 0
    training = json.loads((out / "metrics.json").read_text())["training"]
    assert training["lambda_tr"] == 0.0 and training["lambda_tb"] == 0.0


# --- the run folder -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "run"
    assert main(["train", "--epochs", "2", "--out", str(out), "--quiet"]) == 0
    return out


@pytest.fixture
def run2(trained_run, tmp_path):
    """A fresh copy of a finished 2-epoch digits run (each test may damage its own)."""
    return Path(shutil.copytree(trained_run, tmp_path / "run"))


def test_resume_refuses_changed_settings_and_says_where_it_resumes(run2, capsys):
    assert main(["train", "--resume", "--out", str(run2), "--lr", "0.1"]) == 2
    assert "--lr cannot change" in capsys.readouterr().err
    assert main(["train", "--resume", "--out", str(run2), "--epochs", "3", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "resuming" in err and "epoch 2 of 3 done, continuing with epoch 3" in err


def test_a_truncated_latest_checkpoint_is_never_rotated_over_the_good_one(run2, capsys):
    good_prev = Checkpoint.read(run2 / "checkpoint.prev.pt")
    latest = run2 / "checkpoint.pt"
    latest.write_bytes(latest.read_bytes()[:100])
    assert main(["train", "--resume", "--out", str(run2), "--quiet"]) == 0
    assert "using" in capsys.readouterr().err  # fell back to checkpoint.prev.pt (epoch 1)
    assert Checkpoint.read(run2 / "checkpoint.pt").epoch == 2  # epoch 2 again, from epoch 1
    prev = Checkpoint.read(run2 / "checkpoint.prev.pt")
    assert prev.epoch == good_prev.epoch == 1
    assert all(torch.equal(prev.state_dict[k], good_prev.state_dict[k]) for k in prev.state_dict)


def test_a_failed_save_keeps_the_previous_checkpoint_loadable(run2, monkeypatch, capsys):
    import ttfs_plugin.training.rundir as rundir

    before = Checkpoint.read(run2 / "checkpoint.pt")

    def full_disk(obj, path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    monkeypatch.setattr(rundir, "atomic_torch_save", full_disk)
    assert main(["train", "--resume", "--out", str(run2), "--epochs", "3", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and len(err.strip().splitlines()) <= 2
    monkeypatch.undo()
    assert Checkpoint.read(run2 / "checkpoint.pt").epoch == before.epoch
    assert sorted(p.name for p in run2.glob(".*")) == []  # no temp files left behind
    assert main(["evaluate", str(run2), "--json"]) == 0  # evaluate DIR finds it


def test_evaluate_a_folder_falls_back_to_the_previous_checkpoint(run2, capsys):
    (run2 / "checkpoint.pt").unlink()
    network, record = load_checkpoint(run2)
    assert record.epoch == 1
    assert main(["evaluate", str(run2), "--json"]) == 0
    assert "checkpoint.prev.pt" in capsys.readouterr().err


def test_files_follow_the_umask_and_metrics_json_is_strict(tmp_path):
    old = os.umask(0o027)
    try:
        out = tmp_path / "run"
        assert main(["train", "--epochs", "1", "--out", str(out), "--quiet"]) == 0
    finally:
        os.umask(old)
    for name in ("checkpoint.pt", "metrics.json"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o640, name
    data = json.loads((out / "metrics.json").read_text(),
                      parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert data["format"] == "ttfs-plugin/run-metrics"


def test_an_unrelated_metrics_json_is_left_alone(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "metrics.json").write_text('{"my": "results"}')
    assert main(["train", "--epochs", "1", "--out", str(out), "--quiet"]) == 2
    assert "did not write" in capsys.readouterr().err
    assert (out / "metrics.json").read_text() == '{"my": "results"}'


def test_out_that_is_a_file_or_not_writable(tmp_path, capsys, monkeypatch):
    file = tmp_path / "file"
    file.write_text("x")
    assert main(["train", "--out", str(file)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    assert main(["train", "--out", str(tmp_path / "new")]) == 2
    assert "permission denied" in capsys.readouterr().err


def test_a_diverging_run_stops_and_keeps_its_last_good_checkpoints(run2, monkeypatch, capsys):
    import ttfs_plugin.training.trainer as trainer

    real = trainer.total_loss

    def nan_loss(*args, **kwargs):
        loss, parts = real(*args, **kwargs)
        return loss * float("nan"), parts
    monkeypatch.setattr(trainer, "total_loss", nan_loss)
    before = (run2 / "checkpoint.pt").read_bytes(), (run2 / "checkpoint.prev.pt").read_bytes()
    assert main(["train", "--resume", "--out", str(run2), "--epochs", "3", "--quiet"]) == 2
    assert "the loss became nan at epoch 3, batch 1" in capsys.readouterr().err
    after = (run2 / "checkpoint.pt").read_bytes(), (run2 / "checkpoint.prev.pt").read_bytes()
    assert before == after


# --- output -------------------------------------------------------------------------------------


def test_quiet_and_no_progress_and_the_logged_lr(tmp_path, capsys):
    assert main(["train", "--epochs", "2", "--out", str(tmp_path / "a")]) == 0
    captured = capsys.readouterr()  # not a terminal: no bars, no carriage returns in the log
    assert "epoch 1:" in captured.out and "\r" not in captured.out + captured.err
    assert main(["train", "--epochs", "2", "--out", str(tmp_path / "a2"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "epoch 1:" in out and "epoch 2:" in out and "\r" not in out
    assert main(["train", "--epochs", "2", "--out", str(tmp_path / "b"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "epoch 1:" not in out and "accuracy" in out
    history = json.loads((tmp_path / "b" / "metrics.json").read_text())["history"]
    assert history[0]["lr"] == pytest.approx(1e-3)  # the rate epoch 1 trained with
    assert history[-1]["lr"] > 0  # cosine: the last epoch still trains (0 only after it)


def test_text_evaluate_names_the_backend_and_its_agreement(digits_checkpoint, capsys):
    pytest.importorskip("snntorch")
    assert main(["evaluate", str(digits_checkpoint), "--backend", "snntorch"]) == 0
    out = capsys.readouterr().out
    assert "backend snntorch" in out and "agreement" in out and "equal the surrogate" in out


def test_configs_lists_the_bundled_configs_and_each_one_loads(capsys):
    from ttfs_plugin.configs import list_configs

    assert main(["configs"]) == 0
    out = capsys.readouterr().out
    for name in list_configs():
        assert name in out
        merged = settings("--config", name)  # typed and known keys, by its bundled name
        assert merged["config"] == name


def test_docs_usage_lists_every_train_flag():
    """The flags are generated from the dataclass fields; the usage table must name each."""
    train = cli._subparser(cli.build_parser(), "train")
    text = (Path(__file__).resolve().parents[1] / "docs" / "usage.md").read_text()
    missing = [o for a in train._actions for o in a.option_strings
               if o.startswith("--") and o != "--help" and f"`{o}`" not in text]
    assert not missing, f"docs/usage.md does not list {missing}"


def test_export_and_plot_into_an_impossible_place_is_one_line(digits_checkpoint, tmp_path,
                                                              capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for argv in (["export", str(digits_checkpoint), "--backend", "nir", "--out",
                  str(blocker / "net.nir")],
                 ["export", str(digits_checkpoint), "--backend", "snntorch", "--out",
                  str(blocker / "net.pt")],
                 ["plot", str(digits_checkpoint), "--out", str(blocker / "plots")]):
        if argv[0] == "plot":
            pytest.importorskip("matplotlib")
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"ttfs {argv[0]}: error:") and len(err.splitlines()) == 1, err
    assert blocker.read_text() == "not a folder"


def test_kernels_stay_frozen_before_kernel_start(tmp_path):
    assert main(["train", "--epochs", "3", "--kernel-start", "2", "--out", str(tmp_path / "r"),
                 "--quiet"]) == 0
    history = json.loads((tmp_path / "r" / "metrics.json").read_text())["history"]
    initial = [10.0, 0.0]  # tau0, td0 of the default preset (x_max0 = 1)
    assert all(k == pytest.approx(initial, abs=0) for k in history[0]["kernels"].values())
    assert all(k == pytest.approx(initial, abs=0) for k in history[1]["kernels"].values())
    assert any(k != pytest.approx(initial, abs=1e-9) for k in history[2]["kernels"].values())
    with pytest.raises(ConfigError, match="kernel_start must be >= 0"):
        TrainConfig(kernel_start=-1)


def test_dropout_is_the_vgg16_builders_and_the_paper_configs_turn_it_on(tmp_path, capsys):
    assert main(["train", "--dropout", "--out", str(tmp_path / "r")]) == 2  # digits → mlp
    assert "--dropout is the vgg16 builder's" in capsys.readouterr().err
    assert settings("--config", "cifar10_vgg16")["dropout"] is True
    assert settings()["dropout"] is False
