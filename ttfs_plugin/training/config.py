"""Training hyper-parameters and the paper's ablation presets."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from ..errors import ConfigError, unknown_name
from ..functional import check_spike_proxy_mode


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run (defaults: the paper's, scaled to short runs).

    ``sr_target`` is the SR target epoch ``e_target`` (0 = SR off; ``None`` = a quarter of the
    epochs but at least 2, the paper's 50 of 2,000 being meant for long runs). TR and TB start at
    ``reg_start`` (``None`` = at ``sr_target``, as in the authors' code). ``precise_bn``
    recomputes the batch-norm statistics over the training set with the final weights after the
    last epoch.
    """

    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    lr_schedule: str = "cosine"  # "cosine", "step" or "none"
    lr_step: int = 30  # step schedule: multiply the rate by lr_gamma every lr_step epochs
    lr_gamma: float = 0.1
    lambda_w: float = 1e-4
    lambda_tr: float = 0.0
    lambda_tb: float = 0.0
    tb_mode: str = "exact"
    sr_target: int | None = 0
    reg_start: int | None = None
    seed: int = 0
    bf16: bool = True  # bf16 autocast, on CUDA only (TTFS activations stay in float32)
    precise_bn: bool = False

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"learning rate must be > 0, got {self.lr}")
        for name in ("lambda_w", "lambda_tr", "lambda_tb"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.lr_schedule not in ("cosine", "step", "none"):
            raise unknown_name("LR schedule", self.lr_schedule, ("cosine", "step", "none"))
        if self.lr_step < 1 or not 0 < self.lr_gamma <= 1:
            raise ConfigError(f"step schedule needs lr_step >= 1 and 0 < lr_gamma <= 1, got "
                              f"{self.lr_step}, {self.lr_gamma}")
        check_spike_proxy_mode(self.tb_mode)
        if self.sr_target is not None and self.sr_target < 0:
            raise ConfigError(f"SR target epoch must be >= 0 (0 = off), got {self.sr_target}")

    @property
    def sr_target_epoch(self) -> int:
        # At least 2: with e_target = 1, p_relax(0) = 1 - 1/1 = 0 and SR would never act.
        return max(2, self.epochs // 4) if self.sr_target is None else self.sr_target

    @property
    def reg_start_epoch(self) -> int:
        return self.sr_target_epoch if self.reg_start is None else self.reg_start

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


#: The paper's ablation (Table 1). Each preset sets the training switches and the initial x_max.
#: ``sm`` starts with x_max = 2 (td0 = tau0*ln 2); the others with x_max = 1 (td0 = 0).
PRESETS: dict[str, dict] = {
    "sm": {"x_max0": 2.0, "sr_target": 0, "lambda_tr": 0.0, "lambda_tb": 0.0},
    "sm+sr": {"x_max0": 1.0, "sr_target": None, "lambda_tr": 0.0, "lambda_tb": 0.0},
    "sm+sr+tr": {"x_max0": 1.0, "sr_target": None, "lambda_tr": 1e-4, "lambda_tb": 0.0},
    "sm+sr+tr+tb": {"x_max0": 1.0, "sr_target": None, "lambda_tr": 1e-4, "lambda_tb": 1e-4},
}


def get_preset(name: str) -> dict:
    if name not in PRESETS:
        raise unknown_name("preset", name, PRESETS)
    return dict(PRESETS[name])


def td_for_x_max(x_max: float, tau: float) -> float:
    """The delay that gives ``kappa(0) = exp(td/tau) = x_max``."""
    if x_max <= 0:
        raise ConfigError(f"x_max must be > 0, got {x_max}")
    return tau * math.log(x_max)
