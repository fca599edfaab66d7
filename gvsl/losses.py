"""GVSL's training objective: L = L_NCC + L_smooth + L_MSE (He et al., CVPR 2023, Sec. 3.4).

The functions are pure; :class:`GVSLLoss` picks the terms that a model variant produces. Each runs in
fp32 even inside a bf16 autocast region (:func:`gvsl.runtime.full_precision`): NCC is a ratio of small
differences of large box sums, which are convolutions that autocast would otherwise run in bf16 (0.6719
instead of 0.6705 on one pair of smooth volumes; negative on a default-width GVSL's first step), and the
smoothness term squares differences of neighbouring displacements, which bf16 rounds away.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from monai.networks.layers import separable_filtering
from torch import nn

from gvsl.nets.gvsl_network import GVSLOutput
from gvsl.runtime import full_precision

__all__ = ["GVSLLoss", "LossTerms", "local_ncc_loss", "mse_loss", "smoothness_loss"]

NCC_EPSILON = 1e-5


@full_precision
def local_ncc_loss(pred: torch.Tensor, target: torch.Tensor, window: int = 9) -> torch.Tensor:
    """``1 - mean(cross² / (var_pred · var_target + 1e-5))`` over ``window³`` neighbourhoods.

    This is the authors' ``ncc_loss`` (local sums with zero padding, the window's full voxel count as
    the divisor of the local means, 1e-5 added to the product of the variances). MONAI's
    ``LocalNormalizedCrossCorrelationLoss`` clamps each variance instead, which changes values and
    gradients on flat backgrounds, so it is not used. The local sums use MONAI's separable box
    filtering rather than a dense ``window³`` convolution (same sums, far fewer operations).

    Args:
        pred, target: (B, C, D, H, W); channels are treated independently.
        window: odd side length of the cubic window, in voxels.

    Returns:
        Scalar loss; 0 would be perfect local correlation everywhere.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    if pred.ndim != 5:
        raise ValueError(f"expecting 5-D input (B, C, D, H, W), got shape {tuple(pred.shape)}")
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd integer, got {window}")
    channels = pred.shape[1]
    pred, target = pred.float(), target.float()
    box = torch.ones(window, device=pred.device, dtype=pred.dtype)
    sums = separable_filtering(torch.cat([pred, target, pred * pred, target * target, pred * target], dim=1), box)
    p_sum, t_sum, pp_sum, tt_sum, pt_sum = torch.split(sums, channels, dim=1)
    n = float(window**3)
    p_mean, t_mean = p_sum / n, t_sum / n
    cross = pt_sum - t_mean * p_sum - p_mean * t_sum + p_mean * t_mean * n
    p_var = pp_sum - 2 * p_mean * p_sum + p_mean * p_mean * n
    t_var = tt_sum - 2 * t_mean * t_sum + t_mean * t_mean * n
    return 1 - torch.mean(cross * cross / (p_var * t_var + NCC_EPSILON))


@full_precision
def smoothness_loss(ddf: torch.Tensor) -> torch.Tensor:
    """Mean squared forward differences of a (B, 3, D, H, W) displacement along each axis, averaged over axes.

    MONAI's ``DiffusionLoss`` uses central differences, which vanish on a checkerboard field, so the
    authors' forward differences are kept.
    """
    if ddf.ndim != 5:
        raise ValueError(f"expecting a 5-D displacement (B, 3, D, H, W), got shape {tuple(ddf.shape)}")
    d = torch.diff(ddf, dim=2).pow(2).mean()
    h = torch.diff(ddf, dim=3).pow(2).mean()
    w = torch.diff(ddf, dim=4).pow(2).mean()
    return (d + h + w) / 3


@full_precision
def mse_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error; shapes must match exactly (no broadcasting)."""
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    return torch.mean((pred.float() - target.float()) ** 2)


@dataclass
class LossTerms:
    """The total loss and the named terms that make it up (what each pre-training method logs)."""

    total: torch.Tensor
    parts: dict[str, torch.Tensor] = field(default_factory=dict)

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.parts[name]

    def as_floats(self) -> dict[str, float]:
        """Detached values, ``total`` first, for logging."""
        return {"total": float(self.total.detach()), **{k: float(v.detach()) for k, v in self.parts.items()}}


class GVSLLoss(nn.Module):
    """``L = w_ncc·L_NCC(warped, target) + w_smooth·L_smooth(flow) + w_mse·L_MSE(restored, target)``.

    Each term is included only when the model produced its input, so the ablation variants drop
    exactly their terms. The paper weights all three by 1.
    """

    def __init__(
        self, ncc_weight: float = 1.0, smooth_weight: float = 1.0, mse_weight: float = 1.0, ncc_window: int = 9
    ):
        super().__init__()
        for name, value in (("ncc_weight", ncc_weight), ("smooth_weight", smooth_weight), ("mse_weight", mse_weight)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        self.ncc_weight, self.smooth_weight, self.mse_weight = ncc_weight, smooth_weight, mse_weight
        self.ncc_window = ncc_window

    def forward(self, output: GVSLOutput, target: torch.Tensor) -> LossTerms:
        """Args: output of :class:`~gvsl.nets.GVSL`; target: the clean, spatially transformed x_A."""
        terms: dict[str, torch.Tensor] = {}
        if output.warped is not None:
            terms["ncc"] = local_ncc_loss(output.warped, target, self.ncc_window)
        if output.flow is not None:
            terms["smooth"] = smoothness_loss(output.flow)
        if output.restored is not None:
            terms["mse"] = mse_loss(output.restored, target)
        if not terms:
            raise ValueError("the GVSL output holds nothing to train on (no warped image, flow or restoration)")
        weights = {"ncc": self.ncc_weight, "smooth": self.smooth_weight, "mse": self.mse_weight}
        total = sum(weights[k] * v for k, v in terms.items())
        return LossTerms(total, terms)
