"""Build a network from a :class:`~ttfs_plugin.models.spec.NetworkConfig`.

The result, :class:`TTFSNetwork`, is an ``nn.Sequential`` of named torch layers and ttfs-plugin
neurons that keeps its config; metrics and export walk its children in order.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import Tensor, nn

from ..conv import Conv2d
from ..errors import ConfigError
from ..layers import (
    AnalogInput,
    InputEncoder,
    TBBatchNorm1d,
    TBBatchNorm2d,
    TTFSActivation,
    check_input,
    set_relaxation,
)
from ..roles import Counting
from .spec import AvgPool, Conv, Dense, Dropout, Flatten, MaxPool, NetworkConfig


class TTFSNetwork(nn.Sequential):
    """A surrogate TTFS network (or, with ``activation="relu"``, its plain DNN twin).

    An ``nn.Sequential`` of named layers — ``input`` (encoder), then per hidden spiking layer
    ``conv<i>``/``fc<i>``, ``bn<i>``, ``ttfs<i>`` and maybe ``pool<i>``, then ``output`` whose
    output are the logits — that also keeps its :class:`NetworkConfig` and checks its input.
    """

    def __init__(self, config: NetworkConfig) -> None:
        config.validate()
        super().__init__(OrderedDict(_build_layers(config)))
        self.config = config

    def forward(self, x: Tensor) -> Tensor:
        """Logits of the batch ``x``: shape ``(N, *config.in_shape)``, float (bool is read as
        0/1), finite, within ``[0, 1]`` (checked once, by the input encoder when there is one:
        :func:`ttfs_plugin.layers.check_input`)."""
        if not isinstance(self[0], (InputEncoder, AnalogInput)):  # the DNN twin: no check yet
            x = check_input(x, self.config.in_shape, _dtype_of(self))
        return super().forward(x)

    def spiking_layers(self) -> list[tuple[str, nn.Module]]:
        """``(name, module)`` of every spiking layer in order, the input encoder first."""
        return [(n, m) for n, m in self.named_children() if isinstance(m, Counting)]

    def set_relaxation(self, probability: float,
                       generator: torch.Generator | None = None) -> None:
        """Set the stochastic-relaxation probability of every hidden TTFS neuron (and the
        generator of their draws)."""
        set_relaxation(self, probability, generator)

    @property
    def is_spiking(self) -> bool:
        return self.config.activation == "ttfs"


def _dtype_of(module: nn.Module) -> torch.dtype | None:
    return next((p.dtype for p in module.parameters()), None)


def build_network(config: NetworkConfig) -> TTFSNetwork:
    """The network ``config`` describes."""
    return TTFSNetwork(config)


def _input_layer(cfg: NetworkConfig, kernel_kw: dict[str, Any]) -> nn.Module:
    if cfg.input_mode == "analog":
        return AnalogInput(cfg.in_shape, cfg.T)
    return InputEncoder(cfg.in_shape, **kernel_kw, frozen_kernel=cfg.freeze_input_kernel)


def _build_layers(cfg: NetworkConfig) -> list[tuple[str, nn.Module]]:
    """Named layers: input, conv1/fc1, bn1, ttfs1, pool1, …, flatten, output."""
    spiking = cfg.activation == "ttfs"
    kernel_kw: dict[str, Any] = dict(T=cfg.T, tau=cfg.tau0, td=cfg.td0, theta0=cfg.theta0,
                                     grad_mode=cfg.grad_mode, quantizer=cfg.quantizer)

    def neuron() -> nn.Module:
        return TTFSActivation(**kernel_kw) if spiking else nn.ReLU()

    channels, height, width = cfg.in_shape
    features: int | None = None  # set once flattened
    layers: list[tuple[str, nn.Module]] = [
        ("input", _input_layer(cfg, kernel_kw) if spiking else nn.Identity())]
    depth = 0  # index of the current hidden spiking layer
    for index, entry in enumerate(cfg.layers):
        where = f"layer {index} ({entry!r})"
        if isinstance(entry, Conv):
            if features is not None:
                raise ConfigError(f"{where}: a Conv cannot follow Flatten")
            pad = entry.kernel_size // 2 if entry.padding is None else entry.padding
            depth += 1
            layers.append((f"conv{depth}", Conv2d(channels, entry.out_channels,
                                                  entry.kernel_size, entry.stride, pad,
                                                  bias=not entry.batch_norm)))
            if entry.batch_norm:
                layers.append((f"bn{depth}", TBBatchNorm2d(entry.out_channels) if spiking
                               else nn.BatchNorm2d(entry.out_channels)))
            layers.append((f"ttfs{depth}" if spiking else f"relu{depth}", neuron()))
            channels = entry.out_channels
            height = (height + 2 * pad - entry.kernel_size) // entry.stride + 1
            width = (width + 2 * pad - entry.kernel_size) // entry.stride + 1
        elif isinstance(entry, (MaxPool, AvgPool)):
            if features is not None:
                raise ConfigError(f"{where}: pooling must come before Flatten")
            pool = nn.MaxPool2d if isinstance(entry, MaxPool) else nn.AvgPool2d
            layers.append((f"pool{depth}", pool(entry.kernel_size)))
            height, width = height // entry.kernel_size, width // entry.kernel_size
        elif isinstance(entry, Flatten):
            layers.append(("flatten", nn.Flatten()))
            features = channels * height * width
        elif isinstance(entry, Dropout):
            where_to = "flatten" if features is not None and layers[-1][0] == "flatten" else depth
            layers.append((f"drop_{where_to}", nn.Dropout(entry.p)))
        elif isinstance(entry, Dense):
            if features is None:
                raise ConfigError(f"{where}: add Flatten() before the first Dense")
            depth += 1
            layers.append((f"fc{depth}", nn.Linear(features, entry.out_features,
                                                   bias=not entry.batch_norm)))
            if entry.batch_norm:
                layers.append((f"bn{depth}", TBBatchNorm1d(entry.out_features) if spiking
                               else nn.BatchNorm1d(entry.out_features)))
            layers.append((f"ttfs{depth}" if spiking else f"relu{depth}", neuron()))
            features = entry.out_features
        if height < 1 or width < 1:
            raise ConfigError(f"{where}: the feature map shrinks to nothing for input "
                              f"{cfg.in_shape}; use fewer pooling layers or larger inputs")
    if features is None:
        layers.append(("flatten", nn.Flatten()))
        features = channels * height * width
    layers.append(("output", nn.Linear(features, cfg.num_classes)))
    return layers

