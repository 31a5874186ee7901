"""Training hyper-parameters, model settings and the paper's ablation presets.

Every setting is a dataclass field with its default, its help text and its checks in one place;
``ttfs train`` generates its flags from these fields (:func:`add_arguments`), and a TOML config
file uses the same names. Where a value comes from is decided once (:func:`resolve`):

    command line  >  config file  >  preset  >  field default

A preset named on the command line (``--preset sm``) is a command-line flag too: its settings
(``x_max0``, ``sr_target``, ``lambda_tr``, ``lambda_tb``) then beat the config file's, below the
flags given one by one. A preset named in the config file (``preset = "sm"``) stays below the
file's own values.

``td0`` and ``x_max0`` are one setting in two units (``td0 = tau0·ln x_max0``): the highest
level that gives either wins; giving both at one level is an error.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, unknown_name
from ..functional import GRAD_MODES, SPIKE_PROXY_MODES, TB_WEIGHTINGS, check_spike_proxy_mode
from ..kernel import DEFAULT_KERNEL, DEFAULT_QUANTIZER, QUANTIZERS, check_window
from ..layers import NETWORK_INPUT_MODES

LR_SCHEDULES = ("cosine", "step", "none")
ACTIVATIONS = ("ttfs", "relu")
POOLS = ("max", "avg")


def setting(default: Any, help: str, *, choices: tuple | None = None,
            flag: str | None = None, optional_int: bool = False) -> Any:
    """A dataclass field that is also a ``ttfs train`` flag (``--name-with-dashes``).

    ``flag`` overrides the flag name (e.g. ``--no-bf16`` for a default-true bool);
    ``optional_int`` marks an ``int | None`` field (``None`` has a documented meaning).
    """
    return field(default=default, metadata={"help": help, "choices": choices, "flag": flag,
                                            "optional_int": optional_int})


def _finite(name: str, value: float, low: float = 0.0, strict: bool = False) -> None:
    ok = isinstance(value, (int, float)) and math.isfinite(value) and (
        value > low if strict else value >= low)
    if not ok:
        relation = ">" if strict else ">="
        raise ConfigError(f"{name} must be a finite number {relation} {low:g}, got {value!r}")


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run (defaults: the paper's, scaled to short runs).

    ``sr_target`` is the SR target epoch ``e_target`` (0 = SR off; ``None`` = a quarter of the
    epochs but at least 2, the paper's 50 of 2,000 being meant for long runs). TR and TB start at
    ``reg_start`` (``None`` = at ``sr_target``, as in the authors' code). Before
    ``kernel_start`` the temporal kernels are frozen: their ``tau``, ``td`` get no update.
    ``precise_bn`` recomputes the batch-norm statistics over the training set with the final
    weights after the last epoch.
    """

    epochs: int = setting(20, "training epochs (with --resume: the run's own unless given)")
    batch_size: int = setting(128, "training batch size")
    lr: float = setting(1e-3, "Adam learning rate")
    lr_schedule: str = setting("cosine", "learning-rate schedule", choices=LR_SCHEDULES)
    lr_step: int = setting(30, "step schedule: epochs per step")
    lr_gamma: float = setting(0.1, "step schedule: factor per step")
    lambda_w: float = setting(1e-4, "L2 weight (paper: 1e-4)")
    lambda_tr: float = setting(0.0, "kernel regularisation weight (TR)")
    lambda_tb: float = setting(0.0, "TB spike-proxy weight")
    tb_mode: str = setting("exact", "TB spike-proxy form (authors: their code's bnonn term)",
                           choices=SPIKE_PROXY_MODES)
    tb_weighting: str = setting("auto", "TB layer term: per neuron (n_c = H·W per channel) or "
                                "per channel; auto = per channel for authors, else per neuron",
                                choices=TB_WEIGHTINGS)
    sr_target: int | None = setting(0, "SR target epoch (0 = off; unset in a preset: a quarter "
                                       "of the epochs)", optional_int=True)
    kernel_start: int = setting(0, "epoch from which the kernels' tau, td train (before it they "
                                "stay at their initial values; the authors: the SR target)")
    reg_start: int | None = setting(None, "epoch TR and TB start (default: the SR target)",
                                    optional_int=True)
    seed: int = setting(0, "random seed (weights, shuffling, SR draws)")
    bf16: bool = setting(True, "bf16 autocast on CUDA (TTFS spike times stay float32)",
                         flag="--no-bf16")
    precise_bn: bool = setting(False, "after the last epoch, recompute batch-norm statistics "
                               "over the training set with the final weights")

    def __post_init__(self) -> None:
        check_types(self)
        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {self.batch_size}")
        _finite("learning rate (lr)", self.lr, strict=True)
        for name in ("lambda_w", "lambda_tr", "lambda_tb"):
            _finite(name, getattr(self, name))
        if self.lr_schedule not in LR_SCHEDULES:
            raise unknown_name("LR schedule", self.lr_schedule, LR_SCHEDULES)
        _finite("lr_gamma", self.lr_gamma, strict=True)
        if self.lr_step < 1 or self.lr_gamma > 1:
            raise ConfigError(f"step schedule needs lr_step >= 1 and 0 < lr_gamma <= 1, got "
                              f"{self.lr_step}, {self.lr_gamma}")
        check_spike_proxy_mode(self.tb_mode)
        if self.sr_target is not None and self.sr_target < 0:
            raise ConfigError(f"SR target epoch must be >= 0 (0 = off), got {self.sr_target}")
        if self.kernel_start < 0:
            raise ConfigError(f"kernel_start must be >= 0, got {self.kernel_start}")
        if self.reg_start is not None and self.reg_start < 0:
            raise ConfigError(f"reg_start must be >= 0, got {self.reg_start}")

    @property
    def sr_target_epoch(self) -> int:
        # At least 2: with e_target = 1, p_relax(0) = 1 - 1/1 = 0 and SR would never act.
        return max(2, self.epochs // 4) if self.sr_target is None else self.sr_target

    @property
    def reg_start_epoch(self) -> int:
        return self.sr_target_epoch if self.reg_start is None else self.reg_start

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """From :meth:`to_dict` (unknown keys are an error; missing ones take defaults)."""
        return from_settings(cls, values, strict=True)


@dataclass
class ModelSettings:
    """Which network ``ttfs train`` builds and its initial kernel (the ``kernel and model``
    flags). ``td0`` (or ``x_max0``, the same setting as ``exp(td0/tau0)``) ``None``: the
    preset's ``x_max0``."""

    model: str | None = setting(None, "architecture (default: the dataset's)")
    activation: str = setting("ttfs", "relu trains the plain DNN of the same architecture "
                              "(baseline)", choices=ACTIVATIONS)
    T: int = setting(DEFAULT_KERNEL.T, "time window per layer (steps)")
    tau0: float = setting(DEFAULT_KERNEL.tau0, "initial kernel time constant (steps)")
    td0: float | None = setting(None, "initial kernel delay (default: from --x-max0)")
    x_max0: float | None = setting(None, "initial x_max = exp(td0/tau0) (default: the preset's)")
    theta0: float = setting(DEFAULT_KERNEL.theta0, "threshold scale")
    grad_mode: str = setting("ste", "gradient of the TTFS activation", choices=GRAD_MODES)
    quantizer: str = setting(DEFAULT_QUANTIZER, "spike time from the real time t~: ceil (first "
                             "crossing of theta0*kappa(k)) or round (the authors': "
                             "theta0*kappa(k+1/2))", choices=QUANTIZERS)
    input_mode: str = setting("encode", "how the image reaches the first weight op: encode "
                              "(input-encoder spikes, counted) or analog (the image itself, "
                              "the authors' runs; no input spikes)", choices=NETWORK_INPUT_MODES)
    freeze_input_kernel: bool = setting(False, "keep the input encoder's tau, td at their "
                                        "initial values (a cheaper step: the first weight op "
                                        "needs no input gradient)")
    width: float | None = setting(None, "vgg16 width multiplier")
    pool: str | None = setting(None, "pooling of cnn and vgg16", choices=POOLS)
    dropout: bool = setting(False, "vgg16: the authors' dropout (0.3/0.4 after 8 convs, 0.5 "
                            "after flatten, fc1, fc2); training only")

    def __post_init__(self) -> None:
        check_types(self)
        check_window(self.T)
        _finite("tau0", self.tau0, strict=True)
        _finite("theta0", self.theta0, strict=True)
        if self.td0 is not None:
            _finite("td0", self.td0, low=-math.inf)
        if self.x_max0 is not None:
            _finite("x_max0", self.x_max0, strict=True)
        if self.width is not None:
            _finite("width", self.width, strict=True)

    def initial_td(self, preset: Preset) -> float:
        """``td0``, from ``x_max0`` (given, or the preset's) when it is not set."""
        if self.td0 is not None:
            return self.td0
        return td_for_x_max(self.x_max0 if self.x_max0 is not None else preset.x_max0,
                            self.tau0)

    #: The fields every builder takes as they are (the network's kernel and input settings).
    NETWORK_FIELDS = ("activation", "T", "tau0", "theta0", "grad_mode", "quantizer",
                      "input_mode", "freeze_input_kernel")

    def network_kwargs(self, preset: Preset) -> dict[str, Any]:
        """The builder keywords these settings give (``td0`` resolved with ``preset``)."""
        return {**{name: getattr(self, name) for name in self.NETWORK_FIELDS},
                "td0": self.initial_td(preset)}


@dataclass(frozen=True)
class Preset:
    """One row of the paper's ablation (Table 1): the training switches and the initial
    ``x_max``. ``sr_target=None``: a quarter of the epochs."""

    name: str
    x_max0: float
    sr_target: int | None
    lambda_tr: float
    lambda_tb: float

    def settings(self) -> dict:
        """The settings this preset gives (the level below a config file)."""
        return {"x_max0": self.x_max0, "sr_target": self.sr_target,
                "lambda_tr": self.lambda_tr, "lambda_tb": self.lambda_tb}


#: The paper's ablation (Table 1). ``sm`` starts with x_max = 2 (td0 = tau0·ln 2); the others
#: with x_max = 1 (td0 = 0).
PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("sm", 2.0, 0, 0.0, 0.0),
    Preset("sm+sr", 1.0, None, 0.0, 0.0),
    Preset("sm+sr+tr", 1.0, None, 1e-4, 0.0),
    Preset("sm+sr+tr+tb", 1.0, None, 1e-4, 1e-4),
)}
DEFAULT_PRESET = "sm+sr+tr+tb"


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise unknown_name("preset", name, PRESETS)
    return PRESETS[name]


def td_for_x_max(x_max: float, tau: float) -> float:
    """The delay that gives ``kappa(0) = exp(td/tau) = x_max``."""
    if not (isinstance(x_max, (int, float)) and math.isfinite(x_max) and x_max > 0):
        raise ConfigError(f"x_max must be a finite number > 0, got {x_max!r}")
    return tau * math.log(x_max)


# --- typed values -------------------------------------------------------------------------------


def setting_kind(f: dataclasses.Field) -> tuple[type, bool]:
    """``(base type, may be None)`` of a setting field (annotations are strings here)."""
    text = str(f.type).replace(" ", "")
    optional = "None" in text
    base = text.replace("|None", "").replace("None|", "")
    return {"int": int, "float": float, "str": str, "bool": bool}[base], optional


def check_value(name: str, value: Any, kind: type, optional: bool, choices=None) -> Any:
    """``value`` as a ``kind`` setting, or a ``ConfigError``: a bool is not a number, a
    string is not a bool, 2.7 is not an int; an int is a fine float."""
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{name} needs a value of type {kind.__name__}, got nothing")
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, str)
    if not ok:
        raise ConfigError(f"{name} must be {'a' if kind is not int else 'an'} "
                          f"{kind.__name__}, got {value!r} ({type(value).__name__})")
    if choices and value not in choices:
        raise unknown_name(name, value, choices)
    return value


def check_types(obj) -> None:
    """Check every setting field of a dataclass instance (see :func:`check_value`)."""
    for f in dataclasses.fields(obj):
        if "help" in f.metadata:
            kind, optional = setting_kind(f)
            check_value(f.name, getattr(obj, f.name), kind, optional, f.metadata["choices"])


def from_settings(cls, values: dict, strict: bool = False):
    """``cls`` built from the keys of ``values`` that are its fields (``strict``: no others)."""
    names = {f.name for f in dataclasses.fields(cls)}
    if strict:
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(f"unknown {cls.__name__} setting(s) {', '.join(unknown)}")
    return cls(**{k: v for k, v in values.items() if k in names})


def fields_of(*classes) -> dict[str, tuple[dataclasses.Field, type]]:
    """Every setting field of ``classes`` by name (one name, one meaning)."""
    out: dict[str, tuple[dataclasses.Field, type]] = {}
    for cls in classes:
        for f in dataclasses.fields(cls):
            if "help" in f.metadata:
                if f.name in out:
                    raise RuntimeError(f"setting {f.name} defined twice")
                out[f.name] = (f, cls)
    return out


def defaults_of(*classes) -> dict:
    return {name: f.default for name, (f, _) in fields_of(*classes).items()}


def add_arguments(group, *classes) -> None:
    """One ``argparse`` flag per setting field; every default is ``argparse.SUPPRESS`` so the
    parsed namespace holds only what the command line gave (see :func:`resolve`).

    A bool setting gets two flags, one for each value (``--dropout`` and ``--no-dropout``,
    ``--no-bf16`` and ``--bf16``), so the command line can override a config file either way."""
    import argparse

    for name, (f, _) in fields_of(*classes).items():
        kind, optional = setting_kind(f)
        meta = f.metadata
        flag = meta["flag"] or "--" + name.replace("_", "-")
        shown = "" if f.default is None else f" (default {f.default})"
        if kind is bool:
            action = "store_false" if f.default else "store_true"
            group.add_argument(flag, dest=name, action=action, default=argparse.SUPPRESS,
                               help=meta["help"])
            opposite = "--" + flag[5:] if flag.startswith("--no-") else "--no-" + flag[2:]
            group.add_argument(opposite, dest=name, default=argparse.SUPPRESS,
                               action="store_true" if f.default else "store_false",
                               help=f"undo {flag} (the default; e.g. over a config file)")
        else:
            group.add_argument(flag, dest=name, type=_parser_type(kind, optional),
                               choices=meta["choices"], default=argparse.SUPPRESS,
                               help=meta["help"] + shown)


def _parser_type(kind: type, optional: bool):
    def parse(text: str):
        if optional and text.lower() == "none":
            return None
        try:
            return kind(text)
        except ValueError:
            import argparse

            raise argparse.ArgumentTypeError(f"not a valid {kind.__name__}: {text!r}") from None
    parse.__name__ = kind.__name__
    return parse


def resolve(command_line: dict, config_file: dict, preset: Preset, defaults: dict) -> dict:
    """Merge the levels (command line > config file > preset > defaults; a preset given on the
    command line ranks above the config file); ``td0``/``x_max0`` as one setting (see the
    module docstring)."""
    if command_line.get("preset") is not None:  # --preset NAME: a flag beats the config
        levels = [("command line", command_line), ("preset", preset.settings()),
                  ("config file", config_file)]
    else:
        levels = [("command line", command_line), ("config file", config_file),
                  ("preset", preset.settings())]
    merged = dict(defaults)
    for _, values in reversed(levels):
        merged.update({k: v for k, v in values.items()})
    for where, values in levels:  # the highest level that sets td0 or x_max0 decides
        given = [k for k in ("td0", "x_max0") if values.get(k) is not None]
        if len(given) == 2:
            raise ConfigError(f"the {where} gives both td0 and x_max0 (one setting: td0 = "
                              "tau0·ln x_max0); give one")
        if given:
            other = "x_max0" if given[0] == "td0" else "td0"
            merged[given[0]], merged[other] = values[given[0]], None
            break
    return merged


__all__ = ["TrainConfig", "ModelSettings", "Preset", "PRESETS", "DEFAULT_PRESET", "get_preset",
           "td_for_x_max", "setting", "add_arguments", "resolve", "check_value", "from_settings",
           "fields_of", "defaults_of", "setting_kind", "LR_SCHEDULES", "ACTIVATIONS", "POOLS"]
