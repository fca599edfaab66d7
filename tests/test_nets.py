import pytest
import torch

from gvsl.losses import GVSLLoss
from gvsl.nets import GVSL, VARIANTS, UNet3D

TINY = (8, 16, 16, 16, 16, 16, 16, 8, 8)


def tiny(variant="gvsl", **kw):
    return GVSL.variant(variant, channels=TINY, affine_channels=16, local_head_channels=8, **kw)


def test_unet_paper_widths_and_shapes():
    net = UNet3D()
    assert net.channels == (32, 64, 128, 256, 512, 256, 128, 64, 32)
    g, loc = UNet3D(1, TINY)(torch.rand(2, 1, 20, 33, 16))
    # Padded to (32, 48, 16) before four poolings.
    assert g.shape == (2, 16, 2, 3, 1)
    assert loc.shape == (2, 8, 20, 33, 16)


def test_unet_batch_members_are_independent():
    net = UNet3D(1, TINY).eval()
    x = torch.rand(2, 1, 16, 16, 16)
    _, both = net(x)
    _, first = net(x[:1])
    assert torch.allclose(both[:1], first, atol=1e-5)


def test_unet_padding_is_symmetric_zero_padding():
    net = UNet3D(1, TINY).eval()
    x = torch.rand(1, 1, 10, 16, 16)
    padded = torch.nn.functional.pad(x, [0, 0, 0, 0, 3, 3])
    _, local_small = net(x)
    _, local_padded = net(padded)
    assert torch.allclose(local_small, local_padded[:, :, 3:13], atol=1e-5)


def test_forward_outputs_and_shapes():
    model = tiny()
    a, b = torch.rand(2, 1, 16, 20, 16), torch.rand(2, 1, 16, 20, 16)
    out = model(a, b)
    assert out.restored.shape == a.shape and out.warped.shape == a.shape
    assert out.affine.shape == (2, 3, 4)
    assert out.flow.shape == (2, 3, 16, 20, 16) and out.ddf.shape == (2, 3, 16, 20, 16)


def test_starts_near_identity():
    model = tiny()
    b = torch.rand(1, 1, 16, 16, 16)
    out = model(torch.rand(1, 1, 16, 16, 16), b)
    assert out.flow.abs().max() < 1e-2
    assert torch.isfinite(out.affine).all()


def test_every_parameter_gets_a_gradient_at_batch_two():
    model = tiny()
    a, b = torch.rand(2, 1, 16, 16, 16), torch.rand(2, 1, 16, 16, 16)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    # The affine regressors start at zero (identity), so the affine block's gradient is zero on the
    # very first step only; from the second step on, every parameter learns.
    for _ in range(2):
        optimizer.zero_grad()
        GVSLLoss()(model(a, b), a).total.backward()
        optimizer.step()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert no_grad == []
    for head in ("affine_head", "deformable_head", "restoration_head"):
        assert any(n.startswith(head) for n, _ in model.named_parameters())


@pytest.mark.parametrize(
    "variant, heads, terms",
    [
        ("gvsl", {"affine_head", "deformable_head", "restoration_head"}, {"ncc", "smooth", "mse"}),
        ("no_zmatch", {"restoration_head"}, {"mse"}),
        ("no_fundament", {"affine_head", "deformable_head"}, {"ncc", "smooth"}),
        ("no_affine", {"deformable_head", "restoration_head"}, {"ncc", "smooth", "mse"}),
    ],
)
def test_ablation_switches_remove_exactly_their_parameters_and_terms(variant, heads, terms):
    model = tiny(variant)
    present = {n.split(".")[0] for n, _ in model.named_parameters()} - {"backbone"}
    assert present == heads
    whole = dict(tiny().named_parameters())
    removed = set(whole) - dict(model.named_parameters()).keys()
    assert {n.split(".")[0] for n in removed} == {"affine_head", "deformable_head", "restoration_head"} - heads
    a = torch.rand(2, 1, 16, 16, 16)
    out = model(a, torch.rand(2, 1, 16, 16, 16))
    loss = GVSLLoss()(out, a)
    assert set(loss.as_floats()) == terms | {"total"}
    loss.total.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_restoration_only_needs_no_second_image():
    out = tiny("no_zmatch")(torch.rand(1, 1, 16, 16, 16))
    assert out.warped is None and out.affine is None and out.flow is None and out.restored is not None


def test_variant_table_and_unknown_variant():
    assert set(VARIANTS) == {"gvsl", "no_zmatch", "no_fundament", "no_affine"}
    with pytest.raises(ValueError, match="unknown GVSL variant 'byol'; valid"):
        GVSL.variant("byol")
    with pytest.raises(ValueError, match="at least one"):
        GVSL(channels=TINY, affine=False, deformable=False, restoration=False)


@pytest.mark.parametrize(
    "a_shape, b_shape, message",
    [
        ((1, 16, 16, 16), (1, 16, 16, 16), "view_a: expecting 5-D input"),
        ((1, 2, 16, 16, 16), (1, 2, 16, 16, 16), "view_a: expecting 1 channel"),
        ((1, 1, 16, 16, 16), (1, 1, 16, 16, 20), "image_b shape"),
        ((1, 1, 16, 16, 16), (1, 1, 16, 16), "image_b: expecting 5-D input"),
    ],
)
def test_bad_shapes(a_shape, b_shape, message):
    with pytest.raises(ValueError, match=message):
        tiny()(torch.rand(a_shape), torch.rand(b_shape))


def test_non_finite_input_and_missing_image_b():
    a = torch.rand(1, 1, 16, 16, 16)
    bad = a.clone()
    bad[0, 0, 3, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="image_b: input holds NaN or Inf"):
        tiny()(a, bad)
    with pytest.raises(ValueError, match="image_b is required"):
        tiny()(a)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(channels=(8, 16, 32)), "expecting nine widths"),
        (dict(channels=(8, 16, 32, 64, 128, 64, 32, 16, 4)), r"channels\[8\] must be a multiple"),
        (dict(channels=(8, 16, 26, 64, 128, 64, 32, 16, 8)), r"channels\[2\] must be a multiple"),
        (dict(channels=TINY, affine_channels=26), "affine_channels"),
        (dict(channels=TINY, local_head_channels=6), "local_head_channels"),
    ],
)
def test_widths_that_do_not_fit_group_norm(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GVSL(**kwargs)


def test_affine_head_starts_at_identity_and_bounds_its_translation():
    from gvsl.nets.gvsl_heads import MAX_TRANSLATION, AffineHead

    head = AffineHead(16, hidden_channels=16)
    g_moving, g_fixed = torch.rand(2, 16, 2, 2, 2), torch.rand(2, 16, 2, 2, 2)
    identity = torch.cat([torch.eye(3), torch.zeros(3, 1)], dim=1).expand(2, 3, 4)
    assert torch.allclose(head(g_moving, g_fixed, (32, 24, 16)), identity, atol=1e-6)
    with torch.no_grad():
        head.translation.bias.fill_(1e3)  # a runaway regressor
    translation = head(g_moving, g_fixed, (32, 24, 16))[:, :, 3]
    assert torch.allclose(translation, torch.tensor([16.0, 12.0, 8.0]).expand(2, 3) * MAX_TRANSLATION)
