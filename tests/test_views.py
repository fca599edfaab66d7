import itertools
import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter, gaussian_filter1d
from scipy.special import comb

from gvsl.geometry import affine_to_ddf
from gvsl.views import (
    AppearanceTransform,
    RandSpatialTransform,
    bezier_intensity_curve,
    bezier_intensity_map,
    elastic_displacement,
    elastic_smoothing_matrix,
    make_views,
    time_augmentation,
)
from tests.conftest import smooth_volume

NO_ELASTIC = dict(elastic_alpha=(0.0, 0.0))
IDENTITY = dict(rotation=0.0, scale=(1.0, 1.0), translation=0.0, shear=0.0, **NO_ELASTIC)
ALL_APPEARANCE = dict(local_shuffle_prob=1.0, nonlinear_prob=1.0, inpaint_prob=1.0)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def grid(shape):
    """(3, D, H, W) voxel coordinates."""
    return torch.stack(torch.meshgrid(*(torch.arange(s, dtype=torch.float64) for s in shape), indexing="ij"))


def centre_of_mass(volume):
    """(3,) centre of mass of a (D, H, W) non-negative volume, in voxels."""
    volume = volume.double()
    return (grid(volume.shape) * volume).flatten(1).sum(1) / volume.sum()


def bernstein_curve(points, samples):
    """Independent reference: cubic Bézier through (0,0), p1, p2, (1,1) in Bernstein form, x and y sorted."""
    t = np.linspace(0, 1, samples)
    control = np.array([[0.0, 0.0], *points, [1.0, 1.0]])
    curve = sum(comb(3, i) * t**i * (1 - t) ** (3 - i) * control[i, :, None] for i in range(4))
    return np.sort(curve[0]), np.sort(curve[1])


# ---------------------------------------------------------------------------------------------------
# Views as a whole: inputs, seeds, identity
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("outpaint_prob", [0.0, 1.0])
def test_inputs_are_untouched(outpaint_prob):
    x_a, x_b = torch.rand(2, 1, 24, 24, 24), torch.rand(2, 1, 24, 24, 24)
    saved_a, saved_b = x_a.clone(), x_b.clone()
    appearance = AppearanceTransform(**ALL_APPEARANCE, outpaint_prob=outpaint_prob)
    views = make_views(x_a, x_b, appearance, RandSpatialTransform(elastic_sigma=(3, 4)), gen(1))
    assert torch.equal(x_a, saved_a) and torch.equal(x_b, saved_b)
    assert not torch.equal(views.view_a, views.target_a)  # the corruption reached the view, not the target
    # Each appearance step alone also leaves its input alone.
    sample = x_a[0]
    for step in (appearance.local_pixel_shuffle, appearance.inpaint, appearance.outpaint):
        out = step(sample, gen(2))
        assert torch.equal(sample, saved_a[0]) and out.data_ptr() != sample.data_ptr()


def test_same_seed_same_views_and_other_seed_other_views():
    x_a, x_b = torch.rand(2, 1, 24, 24, 24), torch.rand(2, 1, 24, 24, 24)
    appearance, spatial = AppearanceTransform(**ALL_APPEARANCE), RandSpatialTransform(elastic_sigma=(3, 4))
    first, again, other = (make_views(x_a, x_b, appearance, spatial, gen(seed)) for seed in (1, 1, 2))
    for name in ("view_a", "target_a", "image_b"):
        assert torch.equal(getattr(first, name), getattr(again, name))
        assert (getattr(first, name) - getattr(other, name)).abs().max() > 0.1


def test_each_sample_gets_its_own_draws():
    x = torch.rand(1, 1, 24, 24, 24).expand(2, -1, -1, -1, -1)
    corrupted = AppearanceTransform(**ALL_APPEARANCE)(x, gen(3))
    (moved,) = RandSpatialTransform(elastic_sigma=(3, 4))(x, generator=gen(3))
    assert (corrupted[0] - corrupted[1]).abs().max() > 0.1
    assert (moved[0] - moved[1]).abs().max() > 0.1


def test_zero_probabilities_and_zero_ranges_give_the_input_back():
    x_a, x_b = torch.rand(2, 1, 16, 18, 20), torch.rand(2, 1, 16, 18, 20)
    appearance = AppearanceTransform(0, 0, 0, 0)
    views = make_views(x_a, x_b, appearance, RandSpatialTransform(**IDENTITY), gen())
    for got, want in ((views.view_a, x_a), (views.target_a, x_a), (views.image_b, x_b)):
        assert (got - want).abs().max() < 1e-5  # float32 round-off of grid_sample's coordinate normalisation
    out = appearance(x_a, gen())
    assert torch.equal(out, x_a) and out.data_ptr() != x_a.data_ptr()


# ---------------------------------------------------------------------------------------------------
# Spatial transform
# ---------------------------------------------------------------------------------------------------


def test_without_elastic_the_field_is_the_sampled_affine():
    spatial = RandSpatialTransform(**NO_ELASTIC)
    shape = (16, 20, 12)
    ddf = spatial.sample(2, shape, gen(5))
    affine = spatial.sample_affine(2, shape, gen(5))  # the affine is the first draw of sample()
    assert ddf.shape == (2, 3, *shape)
    assert torch.allclose(ddf, affine_to_ddf(affine, shape), atol=1e-5)
    assert not torch.allclose(affine[0], affine[1])


def test_affine_parameters_stay_in_their_ranges_per_axis():
    shape = (20, 40, 80)  # distinct sizes: a translation fraction must use its own axis
    draws = 400
    translation = RandSpatialTransform(rotation=0, scale=(1, 1), shear=0).sample_affine(draws, shape, gen(1))
    shift = translation[:, :, 3]
    assert torch.allclose(translation[:, :, :3], torch.eye(3).expand(draws, 3, 3))
    for axis, size in enumerate(shape):
        assert shift[:, axis].abs().max() <= 0.1 * size + 1e-5
        assert shift[:, axis].abs().max() > 0.09 * size  # the range is used, not just its centre
    scale = RandSpatialTransform(rotation=0, translation=0, shear=0).sample_affine(draws, shape, gen(2))
    diagonal = scale[:, :, :3].diagonal(dim1=1, dim2=2)
    assert torch.allclose(scale[:, :, :3], torch.diag_embed(diagonal))
    assert 0.75 <= diagonal.min() < 0.76 and 1.24 < diagonal.max() <= 1.25
    rotation = RandSpatialTransform(scale=(1, 1), translation=0, shear=0).sample_affine(draws, shape, gen(3))
    matrix = rotation[:, :, :3]
    assert torch.allclose(matrix @ matrix.transpose(1, 2), torch.eye(3).expand(draws, 3, 3), atol=1e-5)
    # Largest rotation angle of R_z R_y R_x with each angle in ±π/9: at most 3·π/9 in total.
    angle = torch.acos(((matrix.diagonal(dim1=1, dim2=2).sum(1) - 1) / 2).clamp(-1, 1))
    assert angle.max() <= math.pi / 3 + 1e-4


def test_rotation_and_translation_move_a_blob_where_the_affine_says():
    shape = (40, 40, 40)
    centre = torch.tensor([19.5, 19.5, 19.5], dtype=torch.float64)
    blob_at = centre + torch.tensor([5.0, -4.0, 3.0], dtype=torch.float64)
    blob = torch.exp(-((grid(shape) - blob_at[:, None, None, None]) ** 2).sum(0) / (2 * 3.0**2)).float()
    volume = blob.expand(2, 1, *shape)
    spatial = RandSpatialTransform(scale=(1, 1), shear=0, **NO_ELASTIC)
    affine = spatial.sample_affine(2, shape, gen(3)).double()
    (moved,) = spatial(volume, generator=gen(3))
    for b in range(2):
        matrix, shift = affine[b, :, :3], affine[b, :, 3]
        # warped[p] = moving[M (p - c) + t + c]: the blob's centre q lands where M (p - c) + t + c = q.
        expected = centre + torch.linalg.solve(matrix, blob_at - centre - shift)
        assert (centre_of_mass(moved[b, 0]) - expected).abs().max() < 0.05
        assert (expected - blob_at).abs().max() > 1.0  # the transform did move it


def test_volumes_share_one_transform_and_labels_stay_labels():
    image = torch.rand(2, 1, 20, 20, 20)
    labels = torch.randint(0, 4, (2, 1, 20, 20, 20))
    spatial = RandSpatialTransform(elastic_alpha=(200, 400), elastic_sigma=(3, 4))
    moved, doubled, moved_labels = spatial(
        image, 2 * image, labels, generator=gen(7), modes=["bilinear", "bilinear", "nearest"]
    )
    assert torch.equal(doubled, 2 * moved)  # bilinear warping is linear: exact factor 2
    assert moved_labels.dtype == labels.dtype and moved_labels.shape == labels.shape
    assert set(moved_labels.unique().tolist()) <= {0, 1, 2, 3}
    assert not torch.equal(moved_labels, labels)
    # A label map made from a smooth image moves with it: thresholding the warped image agrees with the
    # warped labels except along the boundaries, where nearest and bilinear sampling round differently
    # (~96 % agree); the same labels moved by another draw agree on ~60 % only.
    smooth = smooth_volume((24, 24, 24), seed=3, batch=2)
    mask = (smooth > 0).to(torch.uint8)
    warped_image, warped_mask = spatial(smooth, mask, generator=gen(8), modes=["bilinear", "nearest"])
    (other_mask,) = spatial(mask, generator=gen(9), modes=["nearest"])
    thresholded = (warped_image > 0).to(torch.uint8)
    assert (thresholded == warped_mask).float().mean() > 0.93
    assert (thresholded == other_mask).float().mean() < 0.75


def test_elastic_full_resolution_is_the_authors_definition():
    """elastic_displacement on full-resolution noise = α · Gaussian_σ(noise), zero padding, truncated at 4σ."""
    shape = (18, 20, 22)
    noise = torch.rand(2, 3, *shape, dtype=torch.float64) * 2 - 1
    alpha, sigma = torch.tensor([7.0, 300.0], dtype=torch.float64), torch.tensor([2.0, 3.5], dtype=torch.float64)
    field = elastic_displacement(noise, alpha, sigma, shape)
    for b in range(2):
        for c in range(3):
            want = float(alpha[b]) * gaussian_filter(
                noise[b, c].numpy(), float(sigma[b]), mode="constant", truncate=4.0
            )
            np.testing.assert_allclose(field[b, c].numpy(), want, atol=1e-10)
    vector = np.random.default_rng(0).uniform(-1, 1, 50)
    matrix = elastic_smoothing_matrix(50, 4.3).numpy()
    np.testing.assert_allclose(
        matrix @ vector, gaussian_filter1d(vector, 4.3, mode="constant", truncate=4.0), atol=1e-12
    )


@pytest.mark.parametrize("sigma", [10.0, 11.5, 13.0])
def test_coarse_elastic_grid_keeps_std_and_correlation_length(sigma):
    """The coarse grid's field vs the full-resolution definition, from the exact covariance of the linear map.

    Per axis the field is ``A · noise``; its covariance is ``A Aᵀ / 3`` (uniform(−1, 1) noise), exact for
    any matrix, so the statistics are compared without sampling error. Stated tolerances, interior
    voxels of a 128-voxel axis: 3-D std within 2 % (trilinear interpolation loses ~1 % of it);
    correlation at lags σ/2, σ, 2σ within 0.01. Within 5 voxels of a border the 3-D std is higher by up to
    (1.06)³ (zero padding acts on the coarse grid), a region the authors' zero padding darkens anyway.
    """
    size = 128
    nodes = RandSpatialTransform()._grid_nodes(size, sigma)
    assert nodes < size / 2  # the default really uses a coarse grid (step ≥ 3)
    full = elastic_smoothing_matrix(size, sigma).numpy()
    coarse = elastic_smoothing_matrix(size, sigma, nodes).numpy()
    # Independent full-resolution reference: the per-voxel weights are the truncated Gaussian's.
    radius = int(4 * sigma + 0.5)
    weights = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    weights /= weights.sum()
    interior = np.arange(radius, size - radius)
    cov_full, cov_coarse = full @ full.T, coarse @ coarse.T
    np.testing.assert_allclose(np.diag(cov_full)[interior], (weights**2).sum(), rtol=1e-10)
    std_ratio_3d = (np.diag(cov_coarse)[interior].mean() / np.diag(cov_full)[interior].mean()) ** 1.5
    assert abs(std_ratio_3d - 1) < 0.02
    centre = np.arange(size // 2 - 16, size // 2 + 16)
    for lag in (round(sigma / 2), round(sigma), round(2 * sigma)):

        def correlation(cov, lag=lag):
            return np.mean(cov[centre, centre + lag] / np.sqrt(cov[centre, centre] * cov[centre + lag, centre + lag]))

        assert abs(correlation(cov_coarse) - correlation(cov_full)) < 0.01
        assert abs(correlation(cov_full) - math.exp(-(lag**2) / (4 * sigma**2))) < 0.01  # Gaussian ⊛ Gaussian
    border_ratio = np.diag(cov_coarse)[:5] / np.diag(cov_full)[:5]
    assert np.all(np.abs(border_ratio - 1) < 0.13)


@pytest.mark.parametrize("sigma, step", [(3.0, None), (6.0, 2)])
def test_drawn_elastic_fields_have_the_reference_std(sigma, step):
    """Monte Carlo over drawn fields (noise, wiring, amplitude) vs α · sqrt(1/3) · (Σ g²)^(3/2)."""
    shape, alpha, fields = (48, 48, 48), 50.0, 12
    spatial = RandSpatialTransform(elastic_grid_step=step)
    drawn = spatial.elastic_field(torch.full((fields,), alpha), torch.full((fields,), sigma), shape, gen(11))
    assert drawn.shape == (fields, 3, *shape)
    radius = int(4 * sigma + 0.5)
    weights = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    weights /= weights.sum()
    reference = alpha * math.sqrt(1 / 3) * (weights**2).sum() ** 1.5
    # At least 2σ from the borders, where zero padding removes < 1 % of the variance.
    inner = drawn[:, :, 12:36, 12:36, 12:36]
    # Smooth fields have few independent values per volume: ~3 % (σ=3) and ~8 % (σ=6) sampling error.
    assert abs(inner.std().item() / reference - 1) < (0.1 if sigma < 4 else 0.2)
    # Centred noise: noise in [0, 1) instead of (−1, 1) would put the mean at α/2 = 25 ≫ 0.5 · reference.
    assert abs(inner.mean().item()) < 0.5 * reference


# ---------------------------------------------------------------------------------------------------
# Appearance transform
# ---------------------------------------------------------------------------------------------------


def test_bezier_curve_is_monotone_onto_and_matches_bernstein_form():
    points = [[0.2, 0.9], [0.7, 0.1]]  # a curve that folds back before sorting
    xs, ys = bezier_intensity_curve(torch.tensor(points), samples=2001)
    assert xs[0] == 0 and ys[0] == 0 and xs[-1] == 1 and ys[-1] == 1
    assert (torch.diff(xs) >= 0).all() and (torch.diff(ys) >= 0).all()
    ref_x, ref_y = bernstein_curve(points, 2001)
    np.testing.assert_allclose(xs.numpy(), ref_x, atol=1e-12)
    np.testing.assert_allclose(ys.numpy(), ref_y, atol=1e-12)


def test_bezier_mapping_matches_np_interp_and_stays_monotone_in_unit_range():
    rng = np.random.default_rng(0)
    intensities = torch.linspace(0, 1, 4001, dtype=torch.float64)
    for _ in range(20):
        points = rng.random((2, 2))
        mapped = bezier_intensity_map(intensities, torch.tensor(points))
        assert mapped[0] == 0 and abs(mapped[-1] - 1) < 1e-12
        assert (torch.diff(mapped) >= 0).all() and mapped.min() >= 0 and mapped.max() <= 1
        # Same table size: np.interp reproduces it exactly; the authors' 10⁵ samples: within 10⁻⁴.
        np.testing.assert_allclose(
            mapped.numpy(), np.interp(intensities.numpy(), *bernstein_curve(points, 1001)), atol=1e-12
        )
        np.testing.assert_allclose(
            mapped.numpy(), np.interp(intensities.numpy(), *bernstein_curve(points, 100001)), atol=1e-4
        )
    image = torch.rand(1, 1, 8, 8, 8)
    out = bezier_intensity_map(image, torch.tensor([[0.3, 0.8], [0.6, 0.2]]))
    assert out.dtype == image.dtype and out.shape == image.shape


def test_local_shuffle_permutes_within_blocks_of_one_lattice():
    shape = (40, 42, 44)  # blocks of side max(2, size // 20) = 2
    values = torch.randperm(math.prod(shape)).float().reshape(1, *shape)  # distinct: each value names its source
    volume = torch.cat([values, values + 0.5])  # two channels that must move together
    out = AppearanceTransform().local_pixel_shuffle(volume, gen(6))
    assert torch.equal(out[1], out[0] + 0.5)
    assert torch.equal(out.flatten().sort().values, volume.flatten().sort().values)  # global histogram
    source = grid(shape).flatten(1)[:, values.flatten().argsort()][:, out[0].flatten().long()]  # (3, voxels)
    destination = grid(shape).flatten(1)
    moved = (source != destination).any(0)
    # Every voxel stays inside its block: some phase of the 2-voxel lattice puts source and destination
    # in the same block, so each block's multiset of values is preserved.
    phases = [
        phase
        for phase in itertools.product(range(2), repeat=3)
        if all(
            torch.equal(((source[a] - phase[a]) // 2)[moved], ((destination[a] - phase[a]) // 2)[moved])
            for a in range(3)
        )
    ]
    assert len(phases) == 1
    phase = torch.tensor(phases[0], dtype=torch.float64)[:, None]
    blocks = ((destination - phase) // 2).T
    shuffled_blocks = torch.unique(blocks[moved], dim=0).shape[0]
    all_blocks = math.prod((s - p) // 2 for s, p in zip(shape, phases[0]))
    assert abs(shuffled_blocks / all_blocks - 0.4) < 0.03  # shuffle_fraction, default 0.4


def test_inpainting_changes_only_its_boxes_with_noise_in_unit_range():
    x = torch.full((2, 40, 30, 50), 5.0)
    transform = AppearanceTransform(max_inpaint_blocks=30)
    out = transform.inpaint(x, gen(4))
    boxes = transform.sample_inpaint_boxes(x.shape[1:], gen(4))  # inpaint draws all boxes before any noise
    assert 1 < len(boxes) <= 30
    inside = torch.zeros(x.shape[1:], dtype=torch.bool)
    for box in boxes:
        inside[box] = True
        for axis_slice, size in zip(box, x.shape[1:]):
            assert size // 10 <= axis_slice.stop - axis_slice.start < size // 5
            assert axis_slice.start >= 3 and axis_slice.stop <= size - 3
    changed = out != 5.0
    assert torch.equal(changed, inside.expand_as(changed))
    assert out[changed].min() >= 0 and out[changed].max() < 1
    assert abs(out[changed].mean().item() - 0.5) < 0.02  # uniform noise
    assert len(AppearanceTransform(max_inpaint_blocks=3).sample_inpaint_boxes((40, 40, 40), gen(4))) <= 3


def test_outpainting_keeps_only_its_boxes_and_fills_the_rest_with_noise():
    x = torch.full((1, 42, 35, 49), 5.0)
    transform = AppearanceTransform(outpaint_prob=1.0)
    out = transform.outpaint(x, gen(9))
    boxes = transform.sample_outpaint_boxes(x.shape[1:], gen(9))
    assert 1 <= len(boxes) <= 5
    kept = torch.zeros(x.shape[1:], dtype=torch.bool)
    for box in boxes:
        kept[box] = True
        for axis_slice, size in zip(box, x.shape[1:]):
            assert size - 4 * size // 7 < axis_slice.stop - axis_slice.start <= size - 3 * size // 7
    assert torch.equal(out[0] == 5.0, kept)
    assert out[0][~kept].min() >= 0 and out[0][~kept].max() < 1


def test_small_volumes_are_handled():
    x = torch.rand(1, 1, 3, 5, 7)
    out = AppearanceTransform(**ALL_APPEARANCE)(x, gen())
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    out = AppearanceTransform(outpaint_prob=1.0)(x, gen())
    assert out.shape == x.shape
    (moved,) = RandSpatialTransform()(x, generator=gen())
    assert moved.shape == x.shape and torch.isfinite(moved).all()


# ---------------------------------------------------------------------------------------------------
# Bad input and timing
# ---------------------------------------------------------------------------------------------------

VOLUME = torch.rand(1, 1, 8, 8, 8)


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda: AppearanceTransform(local_shuffle_prob=1.5),
            r"local_shuffle_prob must be a probability in \[0, 1\], got 1.5",
        ),
        (lambda: AppearanceTransform(inpaint_prob=-0.1), r"inpaint_prob must be a probability in \[0, 1\], got -0.1"),
        (lambda: AppearanceTransform(outpaint_prob=2), r"outpaint_prob must be a probability"),
        (lambda: AppearanceTransform(max_inpaint_blocks=-1), "max_inpaint_blocks must be an integer >= 0, got -1"),
        (lambda: RandSpatialTransform(scale=(1.2, 0.8)), r"scale: low must not exceed high, got \(1.2, 0.8\)"),
        (lambda: RandSpatialTransform(elastic_sigma=(13, 10)), "elastic_sigma: low must not exceed high"),
        (lambda: RandSpatialTransform(elastic_alpha=(-1, 2)), "elastic_alpha: values must be >= 0.0"),
        (lambda: RandSpatialTransform(scale=(1.0,)), "scale: expecting a .low, high. pair"),
        (lambda: RandSpatialTransform(rotation=-0.1), "rotation must be >= 0, got -0.1"),
        (lambda: RandSpatialTransform(shear=2.0), "shear must be < π/2"),
        (lambda: RandSpatialTransform(elastic_grid_step=0), "elastic_grid_step must be None or an integer >= 1, got 0"),
        (
            lambda: AppearanceTransform()(torch.rand(1, 8, 8, 8), gen()),
            r"expecting 5-D input \(B, C, D, H, W\), got \(1, 8, 8, 8\)",
        ),
        (lambda: AppearanceTransform()(torch.ones(1, 1, 8, 8, 8, dtype=torch.long), gen()), "floating-point"),
        (
            lambda: RandSpatialTransform()(VOLUME, torch.rand(1, 1, 8, 8, 9), generator=gen()),
            r"volume 1 shape \(1, 1, 8, 8, 9\) does not match volume 0 shape \(1, 1, 8, 8, 8\)",
        ),
        (lambda: RandSpatialTransform()(torch.rand(8, 8, 8), generator=gen()), "volume 0: expecting 5-D input"),
        (lambda: RandSpatialTransform()(generator=gen()), "expecting at least one volume"),
        (
            lambda: RandSpatialTransform()(VOLUME, generator=gen(), modes=["cubic"]),
            r"modes\[0\]: expecting one of \('bilinear', 'nearest'\), got 'cubic'",
        ),
        (
            lambda: RandSpatialTransform()(VOLUME, VOLUME, generator=gen(), modes=["bilinear"]),
            r"expecting one mode per volume \(2\), got 1",
        ),
        (lambda: RandSpatialTransform()(VOLUME.long(), generator=gen()), "bilinear warping needs a floating-point"),
        (
            lambda: RandSpatialTransform().sample(1, (8, 8), gen()),
            r"expecting three positive sizes \(D, H, W\), got \(8, 8\)",
        ),
        (
            lambda: make_views(VOLUME, torch.rand(2, 1, 8, 8, 8), AppearanceTransform(), RandSpatialTransform(), gen()),
            r"x_a and x_b: expecting the same shape, got \(1, 1, 8, 8, 8\) and \(2, 1, 8, 8, 8\)",
        ),
        (lambda: elastic_smoothing_matrix(10, 2.0, 11), r"coarse_size must be in \[1, 10\]"),
        (lambda: elastic_smoothing_matrix(10, 0.0), "sigma must be > 0"),
        (
            lambda: elastic_displacement(torch.rand(1, 2, 4, 4, 4), torch.ones(1), torch.ones(1), (4, 4, 4)),
            r"noise: expecting shape \(B, 3, nD, nH, nW\), got \(1, 2, 4, 4, 4\)",
        ),
        (lambda: bezier_intensity_curve(torch.rand(3, 2)), r"points: expecting shape \(2, 2\)"),
    ],
)
def test_bad_input_is_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_time_augmentation_reports_both_transforms():
    timings = time_augmentation(size=16, repeats=1)
    assert set(timings) == {"spatial_seconds_16", "appearance_seconds_16"}
    assert all(0 < seconds < 5 for seconds in timings.values())
