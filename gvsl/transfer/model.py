"""The transfer model: a GVSL backbone with a one-layer task head, and the frozen-feature cache of the linear protocol.

Where the paper is silent: the segmentation head is a 3×3×3 convolution, as in the authors'
``UNet3D_GVSL.out_conv``.
"""

from __future__ import annotations

import copy
import hashlib

import torch
from torch import nn

from gvsl.errors import GVSLInputError
from gvsl.nets.unet import UNet3D
from gvsl.transfer.config import METRIC_NAMES, TransferConfig

__all__ = ["TransferModel", "build_transfer_model"]


class TransferModel(nn.Module):
    """A GVSL backbone with a one-layer task head; ``forward`` returns logits.

    Args:
        backbone: the (pretrained) U-Net; this module owns it (pass a copy to keep the original).
        task: ``segmentation`` or ``classification``.
        num_classes: segmentation classes including background, or 1 for binary classification.
        frozen: linear protocol: the backbone's parameters get no gradient, the backbone stays in
            ``eval()`` mode whatever ``train()`` is called with, and its forward pass runs without
            autograd (faster, and guarantees its weights are left bit-identical).
        cache_features: frozen only: remember the backbone's output per distinct input (keyed by a
            digest of its bytes). A frozen backbone is a fixed function, so this changes no number;
            it pays off when the same inputs recur — whole-volume crops, where a linear probe sees
            each case again every epoch — and must stay off when inputs never repeat (random crops
            of larger volumes), where it would only grow.

    Heads (paper Sec. 4.1): segmentation, a 3×3×3 convolution f^l → class logits (softmax in the
    loss and at inference); classification, global average pooling of f^g and a linear layer → one
    logit (sigmoid in the loss and at inference).

    ``forward(x)``: x (B, C, D, H, W) → segmentation logits (B, num_classes, D, H, W) or
    classification logits (B, 1).
    """

    def __init__(self, backbone: UNet3D, task: str, num_classes: int, frozen: bool, cache_features: bool = False):
        super().__init__()
        if cache_features and not frozen:
            raise GVSLInputError("cache_features needs a frozen backbone (linear protocol)")
        self.cache_features = cache_features
        self._features: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        if task not in METRIC_NAMES:
            raise GVSLInputError(f"task: unknown {task!r}; valid: {list(METRIC_NAMES)}")
        self.backbone = backbone
        self.task = task
        self.frozen = frozen
        if task == "segmentation":
            self.head: nn.Module = nn.Conv3d(backbone.local_channels, num_classes, kernel_size=3, padding=1)
        else:
            self.head = nn.Linear(backbone.global_channels, num_classes)
        self.backbone.requires_grad_(not frozen)
        if frozen:
            self.backbone.eval()

    def train(self, mode: bool = True) -> TransferModel:
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self

    def _backbone_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.cache_features:
            with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
                return self.backbone(x)
        # Per sample, so a batch of already-seen cases in a new combination is a hit (GroupNorm and
        # eval mode make each sample's features independent of its batch mates).
        keys = [
            (
                tuple(sample.shape),
                sample.dtype,
                sample.device,
                hashlib.blake2b(sample.detach().cpu().numpy().tobytes()).digest(),
            )
            for sample in x
        ]
        missing = {key: index for index, key in enumerate(keys) if key not in self._features}
        if missing:
            with torch.no_grad():
                global_f, local_f = self.backbone(x[list(missing.values())])
            for row, key in enumerate(missing):
                self._features[key] = (global_f[row].detach(), local_f[row].detach())
        return tuple(torch.stack([self._features[key][part] for key in keys]) for part in (0, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        global_feature, local_feature = self._backbone_features(x)
        if self.task == "segmentation":
            return self.head(local_feature)
        return self.head(global_feature.mean(dim=(2, 3, 4)))


def build_transfer_model(backbone: UNet3D, config: TransferConfig, cache_features: bool = False) -> TransferModel:
    """A :class:`TransferModel` over a deep copy of ``backbone`` (the caller's module is never changed).

    The head is initialised from ``config.seed`` without touching the global RNG stream.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return TransferModel(
            copy.deepcopy(backbone),
            config.task,
            config.num_classes,
            frozen=config.protocol == "linear",
            cache_features=cache_features,
        )
