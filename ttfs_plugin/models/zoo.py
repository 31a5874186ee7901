"""Builder functions over layer lists, in the style of ``torchvision.models``.

``mlp()``, ``small_cnn()`` and ``vgg16()`` each return a :class:`TTFSNetwork`; pass
``activation="relu"`` for the plain DNN of the same architecture (the baseline). Kernel settings
(``T``, ``tau0``, ``td0``, ``theta0``, ``grad_mode``, ``quantizer``) go through ``**kernel``.
"""

from __future__ import annotations

from typing import Callable

from ..errors import unknown_name
from .network import TTFSNetwork
from .spec import AvgPool, Conv, Dense, Dropout, Flatten, LayerEntry, MaxPool, NetworkConfig

# VGG-16 in the paper's CIFAR configuration: 13 conv + 2 hidden FC, "M" = pooling.
VGG16_LAYERS: list = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
                      512, 512, 512, "M", 512, 512, 512, "M"]
VGG16_HIDDEN_FC = (512, 512)
#: Dropout of the authors' VGG-16 (seongsikpark/TensorFlow-SNNs, models.py): rate after the
#: 1-based conv number (conv1, conv2, conv3, conv3_1, conv4, conv4_1, conv5, conv5_1), and
#: after flatten, fc1 and fc2.
VGG16_CONV_DROPOUT = {1: 0.3, 3: 0.4, 5: 0.4, 6: 0.4, 8: 0.4, 9: 0.4, 11: 0.4, 12: 0.4}
VGG16_FC_DROPOUT = 0.5


def _scaled(n: int, width: float) -> int:
    return max(1, int(round(n * width)))


def mlp(num_classes: int = 10, in_shape=(1, 8, 8), hidden=(256, 256), activation: str = "ttfs",
        **kernel) -> TTFSNetwork:
    """Input encoder → ``Dense`` × len(hidden) → output (the digits demo model)."""
    layers: list[LayerEntry] = [Flatten(), *(Dense(h) for h in hidden)]
    return TTFSNetwork(NetworkConfig(layers, tuple(in_shape), num_classes, name="mlp",
                                     activation=activation, extra={"hidden": list(hidden)},
                                     **kernel))


def small_cnn(num_classes: int = 10, in_shape=(1, 28, 28), channels=(32, 64), hidden: int = 256,
              pool: str = "max", activation: str = "ttfs", **kernel) -> TTFSNetwork:
    """Conv(c1)-pool-Conv(c2)-pool-Dense(hidden)-output, for 28×28 and 34×34 inputs."""
    Pool = _pool(pool)
    layers: list[LayerEntry] = []
    for c in channels:
        layers += [Conv(c), Pool(2)]
    layers += [Flatten(), Dense(hidden)]
    return TTFSNetwork(NetworkConfig(layers, tuple(in_shape), num_classes, name="cnn",
                                     activation=activation,
                                     extra={"channels": list(channels), "hidden": hidden,
                                            "pool": pool}, **kernel))


def vgg16(num_classes: int = 10, in_shape=(3, 32, 32), width: float = 1.0, pool: str = "max",
          activation: str = "ttfs", dropout: bool = False, **kernel) -> TTFSNetwork:
    """VGG-16 for CIFAR as in the paper: 13 conv + 2 hidden FC (512 each at width 1).

    ``dropout=True`` adds the authors' dropout (:data:`VGG16_CONV_DROPOUT`, 0.5 after flatten,
    fc1, fc2): training only, an identity in eval mode and in export.
    """
    Pool = _pool(pool)
    layers: list[LayerEntry] = []
    convs = 0
    for v in VGG16_LAYERS:
        if v == "M":
            layers.append(Pool(2))
            continue
        convs += 1
        layers.append(Conv(_scaled(v, width)))
        if dropout and convs in VGG16_CONV_DROPOUT:
            layers.append(Dropout(VGG16_CONV_DROPOUT[convs]))
    layers.append(Flatten())
    if dropout:
        layers.append(Dropout(VGG16_FC_DROPOUT))
    for h in VGG16_HIDDEN_FC:
        layers.append(Dense(_scaled(h, width)))
        if dropout:
            layers.append(Dropout(VGG16_FC_DROPOUT))
    return TTFSNetwork(NetworkConfig(layers, tuple(in_shape), num_classes, name="vgg16",
                                     activation=activation,
                                     extra={"width": width, "pool": pool, "dropout": dropout},
                                     **kernel))


def _pool(pool: str):
    pools = {"max": MaxPool, "avg": AvgPool}
    if pool not in pools:
        raise unknown_name("pooling", pool, pools)
    return pools[pool]


MODELS: dict[str, Callable[..., TTFSNetwork]] = {"mlp": mlp, "cnn": small_cnn, "vgg16": vgg16}


def get_model(name: str, **kwargs) -> TTFSNetwork:
    """Build a registered model by name (``mlp``, ``cnn``, ``vgg16``)."""
    if name not in MODELS:
        raise unknown_name("model", name, MODELS)
    return MODELS[name](**kwargs)
