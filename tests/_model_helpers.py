"""Helpers the model tests share."""

import torch
from torch import nn


def randomise_batch_norm(model: nn.Module) -> nn.Module:
    """Give every batch norm of ``model`` random running statistics and affine parameters (a
    trained-looking state, so folding them into the weights is tested), and put it in eval."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=gen) * 0.4 - 0.2)
                m.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(n, generator=gen) * 0.6 - 0.1)
    return model.eval()
