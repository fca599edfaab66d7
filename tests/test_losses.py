import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gvsl.geometry import warp
from gvsl.losses import (
    SIMILARITIES,
    GVSLLoss,
    local_ncc_loss,
    mse_loss,
    mutual_information_loss,
    smoothness_loss,
)
from gvsl.nets import GVSL
from tests.conftest import smooth_volume


def dense_ncc_reference(pred, target, window=9):
    """The authors' formula written directly with a dense window³ convolution, in float64."""
    pred, target = pred.double(), target.double()
    kernel = torch.ones(1, 1, window, window, window, dtype=torch.float64)
    pad = window // 2

    def box(v):
        return F.conv3d(v, kernel, padding=pad)

    n = window**3
    p_sum, t_sum = box(pred), box(target)
    p_mean, t_mean = p_sum / n, t_sum / n
    cross = box(pred * target) - t_mean * p_sum - p_mean * t_sum + p_mean * t_mean * n
    p_var = box(pred * pred) - 2 * p_mean * p_sum + p_mean**2 * n
    t_var = box(target * target) - 2 * t_mean * t_sum + t_mean**2 * n
    return 1 - torch.mean(cross**2 / (p_var * t_var + 1e-5))


def structured_pair():
    """Flat zero background with a bright block and a shifted copy: the case where variance clamping differs."""
    a = torch.zeros(1, 1, 24, 24, 24)
    a[..., 6:16, 8:18, 5:15] = 1.0
    a[..., 10:12, 10:12, 10:12] = 0.5
    b = torch.roll(a, shifts=(2, -1, 3), dims=(2, 3, 4)) * 0.8
    return a, b


@pytest.mark.parametrize("case", ["random", "smooth", "structured"])
def test_ncc_matches_dense_reference_values_and_gradients(case):
    if case == "random":
        pred, target = torch.rand(2, 1, 20, 22, 18), torch.rand(2, 1, 20, 22, 18)
    elif case == "smooth":
        pred, target = smooth_volume((20, 22, 18), seed=1, batch=2), smooth_volume((20, 22, 18), seed=2, batch=2)
    else:
        pred, target = structured_pair()
    pred64 = pred.double().requires_grad_(True)
    ours_pred = pred.clone().requires_grad_(True)
    ours = local_ncc_loss(ours_pred, target)
    ref = dense_ncc_reference(pred64, target)
    assert abs(ours.item() - ref.item()) < 1e-5
    ours.backward()
    ref.backward()
    assert torch.allclose(ours_pred.grad.double(), pred64.grad, atol=1e-6, rtol=1e-3)


def test_ncc_of_an_image_with_itself_is_perfect():
    x = smooth_volume((16, 16, 16))
    assert local_ncc_loss(x, x).item() == pytest.approx(0.0, abs=1e-6)
    # Scaling keeps local correlation perfect (an offset would not: the sums are zero-padded at the border);
    # an anti-correlated image too, since cc is squared.
    assert local_ncc_loss(3 * x, x).item() == pytest.approx(0.0, abs=1e-5)
    assert local_ncc_loss(-x, x).item() == pytest.approx(0.0, abs=1e-5)
    assert local_ncc_loss(x, torch.rand_like(x)).item() > 0.5


def test_smoothness():
    constant = torch.ones(2, 3, 8, 9, 10) * 4.2
    assert smoothness_loss(constant).item() == 0.0
    ramp = torch.arange(8.0).view(1, 1, 8, 1, 1).expand(1, 3, 8, 9, 10)
    # Unit forward differences along D only: mean over D-differences is 1, the others 0.
    assert smoothness_loss(ramp).item() == pytest.approx(1 / 3)
    checker = (torch.arange(6).view(6, 1, 1) + torch.arange(6).view(1, 6, 1) + torch.arange(6).view(1, 1, 6)) % 2
    checker = checker.float().expand(1, 3, 6, 6, 6)
    # Every forward difference of a checkerboard is ±1 (central differences would see 0).
    assert smoothness_loss(checker).item() == pytest.approx(1.0)


def test_mse_and_errors():
    a, b = torch.zeros(1, 1, 4, 4, 4), torch.ones(1, 1, 4, 4, 4)
    assert mse_loss(a, b).item() == 1.0
    with pytest.raises(ValueError, match="same shape"):
        mse_loss(a, torch.ones(1, 1, 4, 4, 5))
    with pytest.raises(ValueError, match="same shape"):
        local_ncc_loss(a, torch.ones(1, 1, 4, 4, 5))
    with pytest.raises(ValueError, match="odd"):
        local_ncc_loss(a, b, window=4)
    with pytest.raises(ValueError, match="5-D"):
        smoothness_loss(torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match="ncc_weight"):
        GVSLLoss(ncc_weight=-1)


def test_gvsl_loss_drops_on_a_tiny_pair():
    torch.manual_seed(0)
    model = GVSL(channels=(8, 16, 16, 16, 16, 16, 16, 8, 8), affine_channels=16, local_head_channels=8)
    fixed = smooth_volume((16, 16, 16), seed=3)
    moving = torch.roll(fixed, shifts=(2, 1, -1), dims=(2, 3, 4))
    criterion = GVSLLoss()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    history = []
    for _ in range(25):
        terms = criterion(model(fixed, moving), fixed)
        opt.zero_grad()
        terms.total.backward()
        opt.step()
        history.append(terms.as_floats())
    assert history[-1]["total"] < 0.7 * history[0]["total"]
    assert history[-1]["ncc"] < history[0]["ncc"]
    assert history[-1]["mse"] < history[0]["mse"]


# ------------------------------------------------------------------------------------------ mutual information


def unit(volume):
    """``volume`` min-maxed to [0, 1], the range every window of the kit produces."""
    return (volume - volume.min()) / (volume.max() - volume.min())


def numpy_parzen_mi(a, b, bins=23, sigma_ratio=0.5):
    """Mutual information (nats) of two intensity arrays from a Gaussian-Parzen joint histogram, in float64:
    ``bins`` centres evenly over [0, 1], each voxel's weights normalised over the bins."""
    centres = np.linspace(0.0, 1.0, bins)
    sigma = sigma_ratio * (centres[1] - centres[0])

    def weights(x):
        x = np.clip(np.asarray(x, np.float64).ravel(), 0, 1)[:, None]
        w = np.exp(-((x - centres) ** 2) / (2 * sigma**2))
        return w / w.sum(axis=1, keepdims=True)

    wa, wb = weights(a), weights(b)
    joint = wa.T @ wb / len(wa)
    product = np.outer(wa.mean(axis=0), wb.mean(axis=0))
    inside = joint > 0
    return float(np.sum(joint[inside] * np.log(joint[inside] / product[inside])))


def levels_volume(levels, shape=(20, 20, 20), seed=0):
    """A smooth volume quantised to ``levels`` (each region one intensity)."""
    v = unit(smooth_volume(shape, seed=seed))
    index = torch.clamp((v * len(levels)).long(), max=len(levels) - 1)
    return torch.tensor(levels, dtype=torch.float32)[index]


@pytest.mark.parametrize("case", ["smooth", "random", "batch of two"])
def test_mutual_information_matches_a_numpy_parzen_histogram(case):
    if case == "smooth":
        a, b = unit(smooth_volume((16, 18, 14), seed=1)), unit(smooth_volume((16, 18, 14), seed=2))
        b = 0.5 * a + 0.5 * b  # dependent, not a function of a
    elif case == "random":
        a = torch.rand(1, 1, 12, 12, 12)
        b = torch.clamp(a**2 + 0.1 * torch.randn_like(a), 0, 1)
    else:
        a, b = unit(smooth_volume((12, 12, 12), seed=3, batch=2)), unit(smooth_volume((12, 12, 12), seed=4, batch=2))
    # MONAI adds 1e-7 to the joint and to the product of the marginals inside the logarithm: about 1e-4 of the value
    expected = np.mean([numpy_parzen_mi(x.numpy(), y.numpy()) for x, y in zip(a, b)])
    assert expected > 0.05
    assert mutual_information_loss(a, b).item() == pytest.approx(-expected, rel=2e-4)
    assert mutual_information_loss(a, b, bins=12).item() == pytest.approx(
        -np.mean([numpy_parzen_mi(x.numpy(), y.numpy(), bins=12) for x, y in zip(a, b)]), rel=2e-4
    )


def test_mutual_information_ignores_a_one_to_one_intensity_map_where_ncc_does_not():
    # four regions at bin centres five bins apart and away from [0, 1]'s ends, so that every voxel's Parzen
    # weights are a shifted copy of one kernel that no other level's reaches; a non-monotonic one-to-one map
    # then only permutes the joint histogram's rows
    centres = [k / 22 for k in (4, 9, 14, 19)]
    x = levels_volume(centres)
    remapped = levels_volume([centres[i] for i in (2, 0, 3, 1)])
    self_mi = mutual_information_loss(x, x).item()
    assert self_mi < -0.9
    assert mutual_information_loss(remapped, x).item() == pytest.approx(self_mi, abs=1e-5)
    assert mutual_information_loss(1 - x, x).item() == pytest.approx(self_mi, abs=1e-5)
    # the local NCC of the same pair: perfect for the image itself, far from it once remapped
    assert local_ncc_loss(x, x).item() < 1e-3 and local_ncc_loss(remapped, x).item() > 0.2
    # and MI still sees misalignment and independence
    assert mutual_information_loss(torch.roll(x, 3, dims=2), x).item() > self_mi + 0.2
    assert mutual_information_loss(torch.rand_like(x), x).item() > -0.05


def test_mutual_information_gradients_move_the_deformation_to_a_known_shift_under_another_contrast():
    """The loss reaches a displacement through the warp: optimising one uniform displacement by MI finds the
    shift that made the fixed image, although the fixed image's contrast is a non-linear, decreasing map of the
    moving one's (1 − m²)."""
    moving = unit(smooth_volume((24, 24, 24), seed=4))
    true = torch.tensor([1.5, -1.0, 0.5])
    fixed = 1 - warp(moving, true.view(1, 3, 1, 1, 1).expand(1, 3, 24, 24, 24).contiguous()) ** 2
    shift = torch.zeros(3, requires_grad=True)
    optimizer = torch.optim.Adam([shift], lr=0.1)
    for _ in range(80):
        loss = mutual_information_loss(warp(moving, shift.view(1, 3, 1, 1, 1).expand(1, 3, 24, 24, 24)), fixed)
        optimizer.zero_grad()
        loss.backward()
        assert torch.isfinite(shift.grad).all() and shift.grad.abs().sum() > 0
        optimizer.step()
    torch.testing.assert_close(shift.detach(), true, atol=0.1, rtol=0)


def test_mutual_information_errors():
    a = torch.zeros(1, 1, 4, 4, 4)
    with pytest.raises(ValueError, match="same shape"):
        mutual_information_loss(a, torch.zeros(1, 1, 4, 4, 5))
    with pytest.raises(ValueError, match="5-D"):
        mutual_information_loss(torch.zeros(4, 4, 4), torch.zeros(4, 4, 4))
    with pytest.raises(ValueError, match=r"similarity must be one of \['ncc', 'mi'\], got 'ssim'"):
        GVSLLoss(similarity="ssim")


def test_gvsl_loss_picks_its_similarity_and_ncc_stays_the_paper_sum():
    torch.manual_seed(0)
    model = GVSL(channels=(8, 16, 16, 16, 16, 16, 16, 8, 8), affine_channels=16, local_head_channels=8)
    fixed = unit(smooth_volume((16, 16, 16), seed=3))
    out = model(fixed, torch.roll(fixed, shifts=(2, 1, -1), dims=(2, 3, 4)))
    assert SIMILARITIES == ("ncc", "mi")
    ncc = GVSLLoss()(out, fixed)
    assert list(ncc.parts) == ["ncc", "smooth", "mse"]
    # the default is the loss as it was: the same terms, summed in the same order, bit for bit
    by_hand = local_ncc_loss(out.warped, fixed) + smoothness_loss(out.flow) + mse_loss(out.restored, fixed)
    assert torch.equal(ncc.total, by_hand)
    assert torch.equal(GVSLLoss(similarity="ncc")(out, fixed).total, ncc.total)
    mi = GVSLLoss(similarity="mi", ncc_weight=2.0)(out, fixed)
    assert list(mi.parts) == ["mi", "smooth", "mse"]
    assert torch.equal(mi["mi"], mutual_information_loss(out.warped, fixed))
    assert torch.equal(mi.total, 2.0 * mi["mi"] + mi["smooth"] + mi["mse"])
    mi.total.backward()
    assert model.deformable_head is not None
    assert all(p.grad is not None for p in model.deformable_head.parameters())
