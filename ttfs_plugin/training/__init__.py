"""Training: hyper-parameters and presets, the Eq. 9 loss, the training loop."""

from .config import PRESETS, TrainConfig, get_preset, td_for_x_max
from .losses import kernel_regularisation_loss, spike_proxy_loss, total_loss, weight_l2
from .rundir import RunDirectory
from .trainer import batches, fit, precise_batchnorm, seed_everything

__all__ = ["PRESETS", "TrainConfig", "get_preset", "td_for_x_max", "kernel_regularisation_loss",
           "spike_proxy_loss", "total_loss", "weight_l2", "batches", "fit", "precise_batchnorm",
           "seed_everything", "RunDirectory"]
