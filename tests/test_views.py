import math

import numpy as np
import pytest
import torch
from scipy.special import comb

from gvsl.geometry import affine_to_ddf
from gvsl.views import AppearanceTransform, RandSpatialTransform, bezier_intensity_curve, make_views

NO_ELASTIC = dict(elastic_alpha=(0.0, 0.0))
IDENTITY = dict(rotation=0.0, scale=(1.0, 1.0), translation=0.0, shear=0.0, **NO_ELASTIC)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_inputs_untouched_and_seeded():
    x_a, x_b = torch.rand(2, 1, 24, 24, 24), torch.rand(2, 1, 24, 24, 24)
    saved_a, saved_b = x_a.clone(), x_b.clone()
    app, spa = AppearanceTransform(1, 1, 1), RandSpatialTransform(elastic_sigma=(3, 4))
    v1 = make_views(x_a, x_b, app, spa, gen(1))
    assert torch.equal(x_a, saved_a) and torch.equal(x_b, saved_b)
    v2 = make_views(x_a, x_b, app, spa, gen(1))
    v3 = make_views(x_a, x_b, app, spa, gen(2))
    assert torch.equal(v1.view_a, v2.view_a) and torch.equal(v1.image_b, v2.image_b)
    assert not torch.equal(v1.view_a, v3.view_a)
    assert not torch.equal(v1.view_a, v1.target_a)  # the corruption reached the view, not the target


def test_zero_probabilities_and_zero_ranges_are_the_identity():
    x_a, x_b = torch.rand(1, 1, 16, 16, 16), torch.rand(1, 1, 16, 16, 16)
    views = make_views(x_a, x_b, AppearanceTransform(0, 0, 0, 0), RandSpatialTransform(**IDENTITY), gen())
    for got, want in ((views.view_a, x_a), (views.target_a, x_a), (views.image_b, x_b)):
        assert torch.allclose(got, want, atol=1e-6)


def test_without_elastic_the_field_is_the_sampled_affine():
    spa = RandSpatialTransform(**NO_ELASTIC)
    ddf = spa.sample(2, (16, 20, 12), gen(5))
    affine = spa.sample_affine(2, (16, 20, 12), gen(5))
    assert torch.allclose(ddf, affine_to_ddf(affine, (16, 20, 12)), atol=1e-5)


def test_known_translation_moves_a_blob():
    shape = (32, 32, 32)
    x = torch.zeros(1, 1, *shape)
    x[..., 12:20, 12:20, 12:20] = 1
    # translation=0.1 of 32 voxels along each axis, drawn in [-3.2, 3.2]: check the centre of mass moves by -t.
    spa = RandSpatialTransform(rotation=0, scale=(1, 1), translation=0.1, shear=0, **NO_ELASTIC)
    affine = spa.sample_affine(1, shape, gen(3))
    (moved,) = spa(x, generator=gen(3))
    grid = torch.stack(torch.meshgrid(*(torch.arange(s, dtype=torch.float32) for s in shape), indexing="ij"))

    def com(v):
        return (grid * v[0]).flatten(1).sum(1) / v.sum()

    assert torch.allclose(com(moved) - com(x), -affine[0, :, 3], atol=0.05)


def test_volumes_share_one_transform_and_labels_stay_labels():
    x = torch.rand(1, 1, 20, 20, 20)
    labels = torch.randint(0, 4, (1, 1, 20, 20, 20)).float()
    a, b, lab = RandSpatialTransform(elastic_sigma=(3, 4))(x, 2 * x, labels, generator=gen(7),
                                                           modes=["bilinear", "bilinear", "nearest"])
    assert torch.allclose(b, 2 * a, atol=1e-6)
    assert set(lab.unique().tolist()) <= {0.0, 1.0, 2.0, 3.0}


def test_bezier_curve_is_monotone_onto_and_matches_bernstein_form():
    points = torch.tensor([[0.2, 0.9], [0.7, 0.1]])
    xs, ys = bezier_intensity_curve(points, samples=2001)
    assert xs[0] == 0 and ys[0] == 0 and xs[-1] == 1 and ys[-1] == 1
    assert (torch.diff(xs) >= 0).all() and (torch.diff(ys) >= 0).all()
    t = np.linspace(0, 1, 2001)
    ctrl = np.array([[0, 0], [0.2, 0.9], [0.7, 0.1], [1, 1]])
    ref = sum(comb(3, i) * t**i * (1 - t) ** (3 - i) * ctrl[i, :, None] for i in range(4))
    np.testing.assert_allclose(xs.numpy(), np.sort(ref[0]), atol=1e-9)
    np.testing.assert_allclose(ys.numpy(), np.sort(ref[1]), atol=1e-9)
    mapped = AppearanceTransform().nonlinear(torch.linspace(0, 1, 50).view(1, 1, 1, 50), gen())
    assert (torch.diff(mapped.flatten()) >= -1e-7).all() and mapped.min() >= 0 and mapped.max() <= 1


def test_local_shuffle_permutes_within_blocks():
    x = torch.rand(1, 40, 40, 40)
    out = AppearanceTransform().local_pixel_shuffle(x, gen())
    assert not torch.equal(out, x)
    # Block side max(2, 40 // 20) = 2: each 2³ block holds the same values as before.
    def blocks(v):
        return v.reshape(20, 2, 20, 2, 20, 2).permute(0, 2, 4, 1, 3, 5).reshape(-1, 8).sort(dim=1).values

    assert torch.equal(blocks(out[0]), blocks(x[0]))
    moved_blocks = (out[0] != x[0]).reshape(20, 2, 20, 2, 20, 2).any(dim=(1, 3, 5)).float().mean()
    assert 0.3 < moved_blocks < 0.7  # shuffle_fraction 0.5 of the blocks


def test_inpainting_changes_only_boxes_with_noise_in_unit_range():
    x = torch.full((1, 32, 32, 32), 5.0)
    out = AppearanceTransform().inpaint(x, gen(4))
    changed = out != 5.0
    assert changed.any() and out[changed].min() >= 0 and out[changed].max() <= 1
    assert changed.float().mean() < 0.9
    out_p = AppearanceTransform().outpaint(x, gen(4))
    kept = out_p == 5.0
    assert kept.any() and (~kept).any()


def test_coarse_elastic_field_matches_full_resolution_statistics():
    spa = RandSpatialTransform()
    shape = (64, 64, 64)
    alpha, sigma = torch.tensor([100.0]), torch.tensor([9.0])
    # Independent draws; the fields are smooth, so the std estimate itself varies by ~15 % between seeds.
    full = torch.cat([spa.elastic_field(1, shape, gen(s), alpha, sigma, step=1) for s in range(8)])
    coarse = torch.cat([spa.elastic_field(1, shape, gen(100 + s), alpha, sigma, step=3) for s in range(8)])
    centre = (slice(None), slice(None), slice(20, 44), slice(20, 44), slice(20, 44))
    std_full, std_coarse = full[centre].std(), coarse[centre].std()
    assert abs(std_coarse / std_full - 1) < 0.25

    def correlation(field, lag):
        a, b = field[:, :, 16:48 - lag], field[:, :, 16 + lag:48]
        return torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1]

    assert abs(correlation(full, 6) - correlation(coarse, 6)) < 0.15


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: AppearanceTransform(local_shuffle_prob=1.5), "local_shuffle_prob must be a probability"),
        (lambda: RandSpatialTransform(scale=(1.2, 0.8)), "scale: low must not exceed high"),
        (lambda: RandSpatialTransform(elastic_alpha=(-1, 2)), "elastic_alpha: values must be >= 0"),
        (lambda: AppearanceTransform()(torch.rand(1, 8, 8, 8), gen()), "expecting 5-D input"),
        (lambda: RandSpatialTransform()(torch.rand(1, 1, 8, 8, 8), torch.rand(1, 1, 8, 8, 9), generator=gen()),
         "does not match volume 0"),
        (lambda: make_views(torch.rand(1, 1, 8, 8, 8), torch.rand(2, 1, 8, 8, 8), AppearanceTransform(),
                            RandSpatialTransform(), gen()), "must equal x_b shape"),
    ],
)
def test_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()
