"""The bundled paper configs (``configs/paper/``: the authors' code; ``configs/paper-prose/``:
the paper's text; docs/paper_configs.md) and the rule that a flag on the command line beats a
config file while a contradiction is an error.

Each config trains one epoch on the 200 real CIFAR images (``image-folder`` on
``../shared/data/cifar10_200``): VGG-16 at width 1/16 by default (about 2 s a config here),
full width under ``-m slow`` (15-25 s a config on 2 shared CPU cores).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ttfs_plugin import cli
from ttfs_plugin.cli import main
from ttfs_plugin.configs import CONFIG_DIR, config_text, list_configs, resolve_config
from ttfs_plugin.errors import ConfigError
from ttfs_plugin.records import Checkpoint
from ttfs_plugin.training import TrainConfig
from ttfs_plugin.training.config import fields_of

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]

#: Table 1 (CIFAR-10) and the CIFAR-100 run: row → (x_max0, sr_target, lambda_tr, lambda_tb),
#: from the paper (Table 1 and its notes a-c, App. D), not from the files.
ROWS = {
    "cifar10_sm": (2.0, 0, 0.0, 0.0),
    "cifar10_sm_sr": (1.0, 50, 0.0, 0.0),
    "cifar10_sm_sr_tr": (1.0, 50, 1e-5, 0.0),
    "cifar10_sm_sr_tr_tb_1e-5": (1.0, 50, 1e-5, 1e-5),
    "cifar10_sm_sr_tr_tb_1e-4": (1.0, 50, 1e-5, 1e-4),
    "cifar100_sm_sr_tr_tb_1e-5": (1.0, 500, 1e-5, 1e-5),
}
FOLDERS = ("paper", "paper-prose")
NAMES = [f"{folder}/{row}" for folder in FOLDERS for row in ROWS]

#: Where the authors' code and the paper's text part (docs/spec.md "Choices"): key → (paper/,
#: paper-prose/). kernel_start and reg_start depend on the row (see test below).
CODE_VS_PROSE = {
    "quantizer": ("round", "ceil"),
    "tb_mode": ("authors", "taylor"),
    "grad_mode": ("ste", "decode"),
    "input_mode": ("analog", "encode"),
    "dropout": (True, False),
    "augment": (True, False),
    "batch_size": (250, 512),
    "bf16": (False, True),
}


def settings(*argv):
    return cli._parse(["train", "--out", "unused", *map(str, argv)]).settings


def values(name: str) -> dict:
    return tomllib.loads(config_text(name))


# --- the files ----------------------------------------------------------------------------------


def test_each_table_row_has_a_config_in_both_folders_and_they_are_listed(capsys):
    bundled = list_configs()
    assert [n for n in bundled if "/" in n] == [f"{folder}/{row}" for folder in FOLDERS
                                                 for row in sorted(ROWS)]
    for name in NAMES:
        assert resolve_config(name) == CONFIG_DIR / f"{name}.toml"
        assert resolve_config(f"configs/{name}.toml") == CONFIG_DIR / f"{name}.toml"
    assert main(["configs"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in NAMES)
    with pytest.raises(ConfigError, match="unknown config 'paper/cifar10'; give a TOML file"):
        resolve_config("paper/cifar10")


@pytest.mark.parametrize("name", NAMES)
def test_the_header_names_the_source_of_every_setting(name):
    """The header lists ``key = value: source`` for exactly the keys the file sets, with the
    same values (so the comment cannot drift from the settings)."""
    text = config_text(name)
    lines = text.splitlines()
    entries: list[str] = []
    for line in lines[lines.index("# Settings and sources:") + 1:]:
        if line == "#":
            break
        if line.startswith("#       "):  # a continued line
            entries[-1] += " " + line[8:]
        else:
            assert line.startswith("#   "), line
            entries.append(line[4:])
    header = {}
    for entry in entries:
        setting, source = entry.split(": ", 1)
        key, value = setting.split(" = ", 1)
        header[key] = (tomllib.loads(f"v = {value}")["v"], source.strip())
    body = values(name)
    assert list(header) == list(body)
    for key, value in body.items():
        assert header[key][0] == value, key
        assert len(header[key][1]) > 5, f"{name}: {key} names no source"
    first = text.splitlines()[0]
    assert first.startswith("# ") and "(paper: " in first  # what `ttfs configs` shows


@pytest.mark.parametrize("row", ROWS)
def test_the_configs_are_the_table_rows_and_part_where_code_and_prose_part(row):
    x_max0, sr_target, lambda_tr, lambda_tb = ROWS[row]
    code, prose = (settings("--config", f"{folder}/{row}") for folder in FOLDERS)
    for merged in (code, prose):
        assert (merged["x_max0"], merged["td0"], merged["sr_target"], merged["lambda_tr"],
                merged["lambda_tb"]) == (x_max0, None, sr_target, lambda_tr, lambda_tb)
        assert (merged["model"], merged["T"], merged["tau0"], merged["theta0"]) == (
            "vgg16", 32, 10.0, 1.0)
        assert (merged["lr"], merged["lr_schedule"], merged["lambda_w"]) == (1e-3, "none", 1e-4)
        assert merged["dataset"] == ("cifar100" if "cifar100" in row else "cifar10")
        assert merged["epochs"] == (4000 if "cifar100" in row else 2000)
    for key, (in_code, in_prose) in CODE_VS_PROSE.items():
        assert (code[key], prose[key]) == (in_code, in_prose), key
    # the authors freeze the kernels until the SR target (50 in their script, also for SM) and
    # start TR, TB the epoch after; the prose states neither (library defaults)
    target = sr_target or 50
    assert (code["kernel_start"], code["reg_start"]) == (target, target + 1)
    assert (prose["kernel_start"], prose["reg_start"]) == (0, sr_target)
    differ = {k for k in code if k not in ("config", "_given") and code[k] != prose[k]}
    assert differ == set(CODE_VS_PROSE) | {"kernel_start", "reg_start"}


# --- one epoch on the real images ---------------------------------------------------------------


def _train_one_epoch(name: str, out: Path, data: Path, *extra: str) -> tuple[dict, Checkpoint]:
    assert main(["train", "--config", name, "--dataset", "image-folder", "--data-dir",
                 str(data), "--epochs", "1", *extra, "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    return metrics, Checkpoint.read(out / "checkpoint.pt")


def _check_run(name: str, metrics: dict, record: Checkpoint) -> None:
    """The file's settings reached the run: training config, network, dataset options."""
    file = values(name)
    training = {k: v for k, v in file.items() if k in fields_of(TrainConfig) and k != "epochs"}
    assert {k: metrics["training"][k] for k in training} == training
    assert metrics["training"]["epochs"] == 1 and len(metrics["history"]) == 1
    net = record.build_network().config
    for key in ("quantizer", "grad_mode", "input_mode", "T", "tau0", "theta0"):
        assert getattr(net, key) == file[key], key
    assert net.td0 == pytest.approx(file["tau0"] * math.log(file["x_max0"]))
    assert net.extra["dropout"] is file["dropout"] and net.extra["pool"] == file["pool"]
    assert metrics["dataset"]["options"]["augment"] is file["augment"]
    assert metrics["preset"] == file["preset"]
    final = metrics["final"]
    assert final["time_steps"] == 17 * 32 and 0.0 <= final["accuracy"] <= 1.0
    assert math.isfinite(metrics["history"][0]["train_loss"])
    # analog input: the image goes into conv1 as it is, so the report has no input layer
    has_input = any(layer["name"] == "input" for layer in final["per_layer"])
    assert has_input is (file["input_mode"] == "encode")


@pytest.mark.parametrize("name", NAMES)
def test_each_paper_config_trains_one_epoch_on_the_real_images(name, shared_data, tmp_path):
    metrics, record = _train_one_epoch(name, tmp_path, shared_data / "cifar10_200",
                                       "--width", "0.0625")
    _check_run(name, metrics, record)
    assert record.build_network().config.extra["width"] == 0.0625  # the flag beat the default


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_each_paper_config_trains_one_epoch_at_full_width(name, shared_data, tmp_path):
    metrics, record = _train_one_epoch(name, tmp_path, shared_data / "cifar10_200")
    _check_run(name, metrics, record)
    assert record.build_network().config.extra["width"] == 1.0


# --- the command line beats the config; a contradiction is an error ------------------------------


def _another(key: str, value):
    """A valid value for ``key`` that differs from ``value``, as command-line words."""
    train = cli._subparser(cli.build_parser(), "train")
    action = next(a for a in train._actions if a.dest == key and a.option_strings)
    if isinstance(value, bool):
        flags = [a for a in train._actions if a.dest == key]
        flip = next(a for a in flags if a.const is (not value))
        return [flip.option_strings[0]], not value
    if key == "dataset":
        return ["--dataset", "digits"], "digits"
    if key == "model":
        return ["--model", "cnn"], "cnn"
    if key == "preset":
        return ["--preset", "sm+sr"], "sm+sr"
    if action.choices:
        other = next(c for c in action.choices if c != value)
        return [action.option_strings[0], other], other
    other = value + 1 if isinstance(value, int) else (value * 3 if value else 0.5)
    return [action.option_strings[0], str(other)], other


@pytest.mark.parametrize("name", ["paper/cifar10_sm_sr_tr_tb_1e-5", "paper-prose/cifar10_sm"])
def test_a_flag_on_the_command_line_beats_every_setting_of_the_file(name):
    for key, value in values(name).items():
        words, expected = _another(key, value)
        merged = settings("--config", name, *words)
        assert merged[key] == expected, (key, words)


def test_x_max0_on_the_command_line_beats_a_config_td0(shared_data, tmp_path):
    """``--config cifar10_vgg16`` sets ``td0 = 0``; ``--preset sm --x-max0 2`` gives the SM
    kernel, ``td0 = tau0·ln 2`` (not 0), in the network that trains."""
    assert values("cifar10_vgg16")["td0"] == 0.0
    metrics, record = _train_one_epoch("cifar10_vgg16", tmp_path / "sm",
                                       shared_data / "cifar10_200", "--preset", "sm",
                                       "--x-max0", "2", "--width", "0.0625")
    assert record.build_network().config.td0 == pytest.approx(10.0 * math.log(2.0))
    assert metrics["preset"] == "sm" and metrics["training"]["sr_target"] == 0
    # the other way round: a command-line td0 beats a file's x_max0
    assert settings("--config", "paper/cifar10_sm", "--td0", 0)["td0"] == 0.0
    assert settings("--config", "paper/cifar10_sm", "--td0", 0)["x_max0"] is None
    with pytest.raises(ConfigError, match="the command line gives both td0 and x_max0"):
        settings("--config", "paper/cifar10_sm", "--td0", 1, "--x-max0", 2)


def test_a_command_line_preset_beats_the_file_and_a_preset_in_the_file_does_not():
    full = "paper/cifar10_sm_sr_tr_tb_1e-5"
    assert values(full)["preset"] == "sm+sr+tr+tb"  # whose own lambda_tr is 1e-4
    assert settings("--config", full)["lambda_tr"] == 1e-5  # the file's value
    merged = settings("--config", full, "--preset", "sm")
    assert (merged["x_max0"], merged["sr_target"], merged["lambda_tr"], merged["lambda_tb"]) == (
        2.0, 0, 0.0, 0.0)
    assert merged["kernel_start"] == 50 and merged["quantizer"] == "round"  # the rest: the file
    explicit = settings("--config", full, "--preset", "sm", "--lambda-tb", 3e-5)
    assert explicit["lambda_tb"] == 3e-5  # a flag given one by one beats the preset


def test_a_contradiction_inside_one_file_is_an_error(tmp_path, capsys):
    base = config_text("paper/cifar10_sm")
    cases = {
        "both.toml": (base + "td0 = 0.0\n", "config file gives both td0 and x_max0"),
        "twice.toml": (base + "batch-size = 64\n",
                       "'batch_size' and 'batch-size' are one setting given twice"),
        "again.toml": (base + "dropout = false\n", "is not valid TOML"),
        "relu.toml": (config_text("paper/cifar10_sm_sr_tr_tb_1e-5")
                      + 'activation = "relu"\n', "relu has no kernel"),
    }
    for file, (text, message) in cases.items():
        path = tmp_path / file
        path.write_text(text)
        assert main(["train", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, (file, err)
    assert not (tmp_path / "run").exists()
    # the same refusal when the command line asks a ReLU twin of a config with TR and TB
    assert main(["train", "--config", "paper/cifar10_sm_sr_tr", "--activation", "relu",
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "lambda_tr, sr_target cannot apply" in err
    assert "add --lambda-tr 0 --sr-target 0" in err  # the fix (tests/test_run_settings.py)
