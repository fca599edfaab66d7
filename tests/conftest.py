import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


def smooth_volume(shape, seed=0, batch=1, channels=1):
    """A smooth random volume (sum of low-frequency cosines), so interpolation error is small."""
    g = torch.Generator().manual_seed(seed)
    d, h, w = (torch.linspace(0, 1, s) for s in shape)
    grid = torch.stack(torch.meshgrid(d, h, w, indexing="ij"))
    out = torch.zeros(batch, channels, *shape)
    for _ in range(4):
        freq = torch.rand(batch, channels, 3, 1, 1, 1, generator=g) * 3
        phase = torch.rand(batch, channels, 1, 1, 1, generator=g) * 6.28
        out += torch.cos((freq * grid).sum(2) * 3.14 + phase)
    return out
