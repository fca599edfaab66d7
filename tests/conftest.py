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


@pytest.fixture
def interrupted_pretrain(monkeypatch):
    """``interrupted_pretrain(iteration, *args, **kwargs)`` runs ``gvsl.pretrain.pretrain(*args, **kwargs)`` and
    stops it with a KeyboardInterrupt (a user's Ctrl-C) right after its checkpoint at ``iteration``."""
    from gvsl.pretrain import engine as module

    def run(iteration, *args, **kwargs):
        save_state = module._save_state

        def save_then_stop(path, model, optimizer, done, *rest):
            save_state(path, model, optimizer, done, *rest)
            if done == iteration:
                raise KeyboardInterrupt

        monkeypatch.setattr(module, "_save_state", save_then_stop)
        try:
            with pytest.raises(KeyboardInterrupt):
                module.pretrain(*args, **kwargs)
        finally:
            monkeypatch.setattr(module, "_save_state", save_state)

    return run
