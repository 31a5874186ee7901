"""ttfs-plugin: energy-efficient time-to-first-spike SNNs trained through a surrogate DNN.

The method of Park & Yoon 2021; every formula follows ``SPEC.md`` (see ``docs/concepts.md``).
"""

__version__ = "0.1.0"

from .errors import CheckpointError, ConfigError, DataError, InputShapeError, TTFSError  # noqa: E402
from .kernel import decode, encode, kernel_table, threshold_table  # noqa: E402
from .layers import (  # noqa: E402
    InputEncoder,
    TBBatchNorm1d,
    TBBatchNorm2d,
    TemporalKernel,
    TTFSActivation,
)

__all__ = [
    "__version__", "CheckpointError", "ConfigError", "DataError", "InputShapeError", "TTFSError",
    "decode", "encode", "kernel_table", "threshold_table", "InputEncoder", "TBBatchNorm1d",
    "TBBatchNorm2d", "TemporalKernel", "TTFSActivation",
]
