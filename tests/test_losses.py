import pytest
import torch
import torch.nn.functional as F

from gvsl.losses import GVSLLoss, local_ncc_loss, mse_loss, smoothness_loss
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
