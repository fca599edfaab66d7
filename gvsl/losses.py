"""GVSL's training objective: L = L_NCC + L_smooth + L_MSE (He et al., CVPR 2023, Sec. 3.4).

The functions are pure; :class:`GVSLLoss` picks the terms that a model variant produces, and which
similarity measures the registration: the paper's local NCC (``ncc``, the default) or global mutual
information (``mi``, :func:`mutual_information_loss`), which the authors suggest for MR (their issue #7).
Each runs in fp32 even inside a bf16 autocast region (:func:`gvsl.runtime.full_precision`): NCC is a ratio
of small differences of large box sums, which are convolutions that autocast would otherwise run in bf16
(0.6719 instead of 0.6705 on one pair of smooth volumes; negative on a default-width GVSL's first step),
mutual information is a matrix product of Parzen weights followed by logarithms of small joint
probabilities, and the smoothness term squares differences of neighbouring displacements, which bf16
rounds away.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch
from monai.losses import GlobalMutualInformationLoss
from monai.networks.layers import separable_filtering
from torch import nn

from gvsl.nets.gvsl_network import GVSLOutput
from gvsl.runtime import full_precision

__all__ = [
    "SIMILARITIES",
    "GVSLLoss",
    "LossTerms",
    "local_ncc_loss",
    "mse_loss",
    "mutual_information_loss",
    "similarity_loss",
    "smoothness_loss",
]

NCC_EPSILON = 1e-5
#: the registration similarities of :class:`GVSLLoss` (``GVSLOptions.similarity``): the paper's local NCC, and
#: global mutual information for contrasts that differ between subjects (MR)
SIMILARITIES = ("ncc", "mi")
#: MONAI's defaults for its Gaussian Parzen window: 23 bins over [0, 1], sigma half the bin spacing
MI_BINS = 23
MI_SIGMA_RATIO = 0.5


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


@functools.cache
def _parzen_mi(bins: int, sigma_ratio: float) -> GlobalMutualInformationLoss:
    return GlobalMutualInformationLoss(kernel_type="gaussian", num_bins=bins, sigma_ratio=sigma_ratio)


@full_precision
def mutual_information_loss(
    pred: torch.Tensor, target: torch.Tensor, bins: int = MI_BINS, sigma_ratio: float = MI_SIGMA_RATIO
) -> torch.Tensor:
    """``−MI(pred, target)`` in nats, the mean over samples and channels: MONAI's ``GlobalMutualInformationLoss``.

    The joint intensity histogram of each (sample, channel) is estimated with Gaussian Parzen windows
    (``bins`` centres evenly over [0, 1], sigma ``sigma_ratio`` of their spacing; Mattes et al. / DeepReg), so it
    is differentiable in ``pred``. Global MI only asks that one intensity predict the other through *some*
    function, one map for the whole crop: it is unchanged by any one-to-one remapping of either image's
    intensities (monotonic or not), where NCC asks for a local linear relation.

    Intensities are expected in [0, 1], which every window of the kit produces (CT window, MR min-max);
    values outside are clamped by MONAI (no gradient there). Channels are treated independently, as by
    :func:`local_ncc_loss`.

    Args:
        pred, target: (B, C, D, H, W).
        bins: Parzen window centres (MONAI's default 23).
        sigma_ratio: the windows' standard deviation as a fraction of the bin spacing (MONAI's 0.5).

    Returns:
        Scalar loss in [−log(bins), 0]; lower is better, 0 for independent images.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    if pred.ndim != 5:
        raise ValueError(f"expecting 5-D input (B, C, D, H, W), got shape {tuple(pred.shape)}")
    flat = (pred.shape[0] * pred.shape[1], 1, *pred.shape[2:])
    return _parzen_mi(int(bins), float(sigma_ratio))(pred.float().reshape(flat), target.float().reshape(flat))


def similarity_loss(pred: torch.Tensor, target: torch.Tensor, similarity: str = "ncc", ncc_window: int = 9):
    """The registration loss ``similarity`` (one of :data:`SIMILARITIES`) of ``pred`` against ``target``."""
    if similarity == "ncc":
        return local_ncc_loss(pred, target, ncc_window)
    if similarity == "mi":
        return mutual_information_loss(pred, target)
    raise ValueError(f"similarity must be one of {list(SIMILARITIES)}, got {similarity!r}")


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
    """``L = w_ncc·L_sim(warped, target) + w_smooth·L_smooth(flow) + w_mse·L_MSE(restored, target)``.

    Each term is included only when the model produced its input, so the ablation variants drop
    exactly their terms. The paper weights all three by 1. ``similarity`` picks L_sim (:data:`SIMILARITIES`):
    the paper's local NCC (term ``ncc``) or mutual information (term ``mi``, :func:`mutual_information_loss`);
    ``ncc_weight`` weighs whichever it is.
    """

    def __init__(
        self,
        ncc_weight: float = 1.0,
        smooth_weight: float = 1.0,
        mse_weight: float = 1.0,
        ncc_window: int = 9,
        similarity: str = "ncc",
    ):
        super().__init__()
        for name, value in (("ncc_weight", ncc_weight), ("smooth_weight", smooth_weight), ("mse_weight", mse_weight)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if similarity not in SIMILARITIES:
            raise ValueError(f"similarity must be one of {list(SIMILARITIES)}, got {similarity!r}")
        self.ncc_weight, self.smooth_weight, self.mse_weight = ncc_weight, smooth_weight, mse_weight
        self.ncc_window, self.similarity = ncc_window, similarity

    def forward(self, output: GVSLOutput, target: torch.Tensor) -> LossTerms:
        """Args: output of :class:`~gvsl.nets.GVSL`; target: the clean, spatially transformed x_A."""
        terms: dict[str, torch.Tensor] = {}
        if output.warped is not None:
            terms[self.similarity] = similarity_loss(output.warped, target, self.similarity, self.ncc_window)
        if output.flow is not None:
            terms["smooth"] = smoothness_loss(output.flow)
        if output.restored is not None:
            terms["mse"] = mse_loss(output.restored, target)
        if not terms:
            raise ValueError("the GVSL output holds nothing to train on (no warped image, flow or restoration)")
        weights = {self.similarity: self.ncc_weight, "smooth": self.smooth_weight, "mse": self.mse_weight}
        total = sum(weights[k] * v for k, v in terms.items())
        return LossTerms(total, terms)
