"""Helpers shared by the dataset tests."""

import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader

from ttfs_plugin.models import small_cnn


def one_training_step(data, batch_size=8):
    """One forward / backward / Adam step of a small CNN on a training batch."""
    net = small_cnn(num_classes=data.num_classes, in_shape=data.in_shape, channels=(4, 8),
                    hidden=16)
    x, y = next(iter(DataLoader(data.train, batch_size=batch_size, shuffle=True)))
    assert x.dtype == torch.float32 and tuple(x.shape[1:]) == tuple(data.in_shape)
    assert y.dtype == torch.long
    before = [p.detach().clone() for p in net.parameters()]
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    loss = F.cross_entropy(net(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))


def _one_line(exc_info):
    message = str(exc_info.value)
    assert "\n" not in message
    return message


def write_idx(path, array, gz=None):
    """Write a uint8 array as an IDX file (images: 3-d, magic 2051; labels: 1-d, magic 2049),
    gzip-compressed when ``gz`` (default: when the name ends in ``.gz``)."""
    import gzip
    import struct

    import numpy as np

    array = np.ascontiguousarray(array, dtype=np.uint8)
    raw = struct.pack(f">I{array.ndim}I", 2048 + array.ndim, *array.shape) + array.tobytes()
    if gz if gz is not None else str(path).endswith(".gz"):
        raw = gzip.compress(raw)
    path.write_bytes(raw)
    return path
