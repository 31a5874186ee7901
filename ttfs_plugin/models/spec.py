"""The declarative layer list a network is built from (and that export walks).

An architecture is a list of entries — :class:`Conv`, :class:`Dense`, :class:`MaxPool`,
:class:`AvgPool`, :class:`Flatten` — in the style of torchvision's VGG configs. Every ``Conv`` and
``Dense`` of the list is a hidden spiking layer (weight op, optional batch norm, TTFS neuron); the
builder adds the input encoder in front and the output layer (a ``Linear`` with no neuron) at the
end. :class:`NetworkConfig` holds the list plus everything else needed to rebuild the network, and
round-trips through plain dicts (the checkpoint format).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Union

from ..errors import ConfigError
from ..functional import check_grad_mode
from ..kernel import (
    DEFAULT_KERNEL,
    DEFAULT_QUANTIZER,
    check_kernel_values,
    check_quantizer,
    check_window,
)
from ..layers import check_network_input_mode


@dataclass(frozen=True)
class Conv:
    """3×3 (by default) convolution → batch norm → TTFS neuron."""

    out_channels: int
    kernel_size: int = 3
    stride: int = 1
    padding: int | None = None  # None: "same" padding, kernel_size // 2
    batch_norm: bool = True


@dataclass(frozen=True)
class Dense:
    """Fully connected layer → batch norm → TTFS neuron."""

    out_features: int
    batch_norm: bool = True


@dataclass(frozen=True)
class MaxPool:
    """Max-pooling: in the spiking network, the first spike among the inputs passes."""

    kernel_size: int = 2


@dataclass(frozen=True)
class AvgPool:
    """Average pooling of the kernel-weighted spikes (linear)."""

    kernel_size: int = 2


@dataclass(frozen=True)
class Flatten:
    """Flatten ``(C, H, W)`` to a vector before the first ``Dense``."""


@dataclass(frozen=True)
class Dropout:
    """Dropout with probability ``p`` of the layer before (training only: an identity in eval
    mode and in every exported network)."""

    p: float

    def __post_init__(self) -> None:
        if not (isinstance(self.p, (int, float)) and 0 <= self.p < 1):
            raise ConfigError(f"dropout probability must be in [0, 1), got {self.p!r}")


#: What a config written before a setting existed means by its absence (``"quantizer"``: every
#: earlier network used the first crossing; ``"input_mode"``: every one encoded its input).
SETTINGS_BEFORE_THEY_EXISTED = {"quantizer": "ceil", "input_mode": "encode",
                                "freeze_input_kernel": False}

LayerEntry = Union[Conv, Dense, MaxPool, AvgPool, Flatten, Dropout]
LAYER_TYPES = {cls.__name__: cls for cls in (Conv, Dense, MaxPool, AvgPool, Flatten, Dropout)}
ACTIVATIONS = ("ttfs", "relu")


@dataclass
class NetworkConfig:
    """Everything needed to rebuild a network: architecture, shapes and kernel settings."""

    layers: list[LayerEntry]
    in_shape: tuple[int, int, int]
    num_classes: int
    name: str = "custom"
    activation: str = "ttfs"  # "relu" builds the plain DNN of the same architecture
    T: int = DEFAULT_KERNEL.T
    tau0: float = DEFAULT_KERNEL.tau0
    td0: float = DEFAULT_KERNEL.td0
    theta0: float = DEFAULT_KERNEL.theta0
    grad_mode: str = "ste"
    quantizer: str = DEFAULT_QUANTIZER
    input_mode: str = "encode"  # or "analog": see layers.NETWORK_INPUT_MODES
    freeze_input_kernel: bool = False  # the input encoder's tau, td not trained
    extra: dict = field(default_factory=dict)  # builder arguments (e.g. width), for the record

    def __post_init__(self) -> None:
        self.in_shape = tuple(int(s) for s in self.in_shape)  # type: ignore[assignment]
        self.validate()

    def validate(self) -> None:
        check_window(self.T)
        check_kernel_values(self.tau0, self.td0, self.theta0)
        check_grad_mode(self.grad_mode)
        check_quantizer(self.quantizer)
        check_network_input_mode(self.input_mode)
        if self.freeze_input_kernel and self.input_mode == "analog":
            raise ConfigError("freeze_input_kernel and input_mode='analog' contradict each other: "
                              "an analog input layer has no kernel to freeze; drop one")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if len(self.in_shape) != 3 or min(self.in_shape) < 1:
            raise ConfigError(f"in_shape must be (channels, height, width), got {self.in_shape}")
        if self.num_classes < 2:
            raise ConfigError(f"num_classes must be >= 2, got {self.num_classes}")
        for entry in self.layers:
            if type(entry) not in LAYER_TYPES.values():
                raise ConfigError(f"unknown layer entry {entry!r}; use one of {list(LAYER_TYPES)}")

    def to_dict(self) -> dict:
        """Plain-Python form (for checkpoints and JSON)."""
        out = dataclasses.asdict(self)
        out["layers"] = [[type(e).__name__, dataclasses.asdict(e)] for e in self.layers]
        out["in_shape"] = list(self.in_shape)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "NetworkConfig":
        """Inverse of :meth:`to_dict`; raises ``ConfigError`` on anything it does not know."""
        try:
            data = dict(data)
            # written before these settings existed: the network was built the one way there was
            for key, then in SETTINGS_BEFORE_THEY_EXISTED.items():
                data.setdefault(key, then)
            layers = [LAYER_TYPES[kind](**kwargs) for kind, kwargs in data.pop("layers")]
            return cls(layers=layers, **data)
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"not a valid network config ({exc!r})") from None
