"""Model specs, the network builder and the model zoo."""

from .network import TTFSNetwork, build_network
from .spec import AvgPool, Conv, Dense, Dropout, Flatten, MaxPool, NetworkConfig
from .zoo import MODELS, get_model, mlp, small_cnn, vgg16

__all__ = ["AvgPool", "Conv", "Dense", "Dropout", "Flatten", "MaxPool", "NetworkConfig",
           "TTFSNetwork", "build_network", "MODELS", "get_model", "mlp", "small_cnn", "vgg16"]
