import math

import numpy as np
import pytest
import torch
from monai.transforms.utils import create_rotate, create_scale
from scipy import ndimage

from gvsl.geometry import (
    affine_from_parameters,
    affine_to_ddf,
    compose_affine_ddf,
    identity_affine,
    warp,
    warp_affine,
)
from tests.conftest import smooth_volume


def _params(batch, seed=0):
    g = torch.Generator().manual_seed(seed)
    rot = (torch.rand(batch, 3, generator=g) * 2 - 1) * math.pi / 9
    scale = 1 + (torch.rand(batch, 3, generator=g) * 2 - 1) * 0.25
    trans = (torch.rand(batch, 3, generator=g) * 2 - 1) * 3
    shear = (torch.rand(batch, 6, generator=g) * 2 - 1) * math.pi / 18
    return rot, scale, trans, shear


def test_zero_ddf_and_identity_affine_are_identities():
    x = torch.rand(2, 3, 13, 16, 11)
    zero = torch.zeros(2, 3, 13, 16, 11)
    assert torch.allclose(warp(x, zero), x, atol=1e-6)
    assert torch.allclose(warp_affine(x, identity_affine(2)), x, atol=1e-6)
    assert torch.equal(affine_to_ddf(identity_affine(2), (13, 16, 11)), zero)


def test_affine_from_parameters_matches_monai_rotation_and_scale():
    rot, scale, _, _ = _params(3)
    affine = affine_from_parameters(rot, scale, torch.zeros(3, 3), torch.zeros(3, 6))
    for b in range(3):
        # MONAI's rotate_order="xyz" gives R_z·R_y·R_x in (x, y, z) axis order.
        r = create_rotate(3, rot[b].tolist(), rotate_order="xyz", backend="numpy")[:3, :3]
        s = create_scale(3, scale[b].tolist(), backend="numpy")[:3, :3]
        expected_xyz = s @ r
        perm = [2, 1, 0]  # (x, y, z) -> (D, H, W)
        np.testing.assert_allclose(affine[b, :, :3].numpy(), expected_xyz[perm][:, perm], atol=1e-6)


def test_shear_matrix_entries_are_tangents():
    shear = torch.tensor([[0.1, -0.2, 0.05, 0.15, -0.1, 0.2]])
    affine = affine_from_parameters(torch.zeros(1, 3), torch.ones(1, 3), torch.zeros(1, 3), shear)
    t = torch.tan(shear[0])
    expected_xyz = torch.tensor([[1, t[0], t[1]], [t[2], 1, t[3]], [t[4], t[5], 1]])
    assert torch.allclose(affine[0, :, :3], expected_xyz[[2, 1, 0]][:, [2, 1, 0]], atol=1e-6)


def test_warp_affine_matches_scipy_affine_transform():
    shape = (20, 24, 18)
    x = smooth_volume(shape, batch=2)
    affine = affine_from_parameters(*_params(2, seed=3))
    ours = warp_affine(x, affine)
    centre = (np.array(shape) - 1) / 2
    for b in range(2):
        m = affine[b, :, :3].double().numpy()
        offset = affine[b, :, 3].double().numpy() + centre - m @ centre
        ref = ndimage.affine_transform(x[b, 0].double().numpy(), m, offset=offset, order=1, mode="grid-constant")
        np.testing.assert_allclose(ours[b, 0].numpy(), ref, atol=1e-4)


def test_known_shift_is_undone():
    shape = (24, 24, 24)
    x = smooth_volume(shape)
    shift = torch.tensor([3.0, -2.0, 5.0])
    moved = torch.roll(x, shifts=tuple(int(s) for s in shift), dims=(2, 3, 4))
    # warped[p] = moved[p + shift] = x[p]: a constant ddf equal to the shift undoes the roll.
    ddf = shift.view(1, 3, 1, 1, 1).expand(1, 3, *shape).contiguous()
    restored = warp(moved, ddf)
    inner = (slice(None), slice(None), slice(3, -3), slice(2, -2), slice(5, -5))
    assert torch.allclose(restored[inner], x[inner], atol=1e-5)
    # The same shift as an affine translation.
    affine = identity_affine(1)
    affine[0, :, 3] = shift
    assert torch.allclose(warp_affine(moved, affine)[inner], x[inner], atol=1e-5)


def test_known_rotation_is_undone_by_inverse_affine():
    shape = (32, 32, 32)
    x = smooth_volume(shape)
    rot = torch.tensor([[0.0, 0.0, 0.3]])
    a = affine_from_parameters(rot, torch.ones(1, 3), torch.zeros(1, 3), torch.zeros(1, 6))
    a_inv = affine_from_parameters(-rot, torch.ones(1, 3), torch.zeros(1, 3), torch.zeros(1, 6))
    back = warp_affine(warp_affine(x, a), a_inv)
    centre = (slice(None), slice(None), slice(10, 22), slice(10, 22), slice(10, 22))
    err = (back - x)[centre].abs().mean() / x[centre].abs().mean()
    assert err < 0.05  # two bilinear interpolations of a smooth volume


def test_fused_ddf_equals_sequential_warps_within_interpolation_error():
    shape = (24, 28, 20)
    x = smooth_volume(shape, batch=2)
    affine = affine_from_parameters(*_params(2, seed=5))
    flow = smooth_volume(shape, seed=9, batch=2, channels=3) * 1.5
    sequential = warp(warp_affine(x, affine), flow)
    fused_ddf = compose_affine_ddf(affine, flow)
    fused = warp(x, fused_ddf)
    # Compare where both the intermediate and the final sample points stay inside the volume.
    grid = torch.stack(torch.meshgrid(*(torch.arange(s, dtype=torch.float32) for s in shape), indexing="ij"))
    size = torch.tensor(shape, dtype=torch.float32).view(1, 3, 1, 1, 1)

    def inside(points):
        return ((points >= 1) & (points <= size - 2)).all(dim=1, keepdim=True)

    valid = inside(grid + flow) & inside(grid + fused_ddf)
    assert valid.float().mean() > 0.3
    diff = (sequential - fused).abs()[valid]
    assert diff.mean() < 0.02 * x.abs().mean() and diff.max() < 0.3
    # On a linear volume, bilinear interpolation is exact: fused and sequential agree to float precision.
    d, h, w = torch.meshgrid(*(torch.arange(s, dtype=torch.float32) for s in shape), indexing="ij")
    ramp = (0.3 * d - 0.2 * h + 0.5 * w).expand(2, 1, *shape)
    small = affine.clone()
    small[:, :, 3] = 0.0
    inner_ok = (slice(None), slice(None), slice(8, -8), slice(8, -8), slice(8, -8))
    seq = warp(warp_affine(ramp, small), flow * 0.3)
    fus = warp(ramp, compose_affine_ddf(small, flow * 0.3))
    assert torch.allclose(seq[inner_ok], fus[inner_ok], atol=1e-3)


def test_affine_gradients_flow_to_parameters():
    params = [p.clone().requires_grad_(True) for p in _params(2)]
    x = smooth_volume((16, 16, 16), batch=2)
    warp_affine(x, affine_from_parameters(*params)).square().mean().backward()
    for p in params:
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: warp(torch.rand(1, 1, 4, 4), torch.zeros(1, 3, 4, 4)), "5-D"),
        (lambda: warp(torch.rand(1, 1, 4, 4, 4), torch.zeros(1, 2, 4, 4, 4)), "ddf: expecting shape"),
        (lambda: warp(torch.rand(1, 1, 4, 4, 4), torch.zeros(1, 3, 4, 4, 4), mode="cubic"), "warp mode"),
        (lambda: affine_to_ddf(torch.zeros(1, 4, 4), (4, 4, 4)), "(B, 3, 4)"),
        (
            lambda: affine_from_parameters(torch.zeros(1, 2), torch.ones(1, 3), torch.zeros(1, 3), torch.zeros(1, 6)),
            "rotation",
        ),
    ],
)
def test_bad_geometry_input(call, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call()


def test_geometry_runs_in_fp32_under_bf16_autocast():
    # Under CPU bf16 autocast a plain einsum rounds to bf16, so the check below is not vacuous.
    gen = torch.Generator().manual_seed(0)
    affine = affine_from_parameters(
        torch.rand(2, 3, generator=gen) * 0.3,
        1 + torch.rand(2, 3, generator=gen) * 0.2,
        torch.full((2, 3), 16.0),
        torch.rand(2, 6, generator=gen) * 0.1,
    )
    flow = torch.randn(2, 3, 12, 14, 16, generator=gen)
    image = torch.rand(2, 1, 12, 14, 16, generator=gen)
    expected_ddf = compose_affine_ddf(affine, flow)
    expected_warp = warp(image, expected_ddf)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.einsum("bij,bjk->bik", affine[:, :, :3], affine[:, :, :3]).dtype == torch.bfloat16
        ddf = compose_affine_ddf(affine, flow)
        warped = warp(image.bfloat16(), ddf)
        assert affine_to_ddf(affine, (12, 14, 16)).dtype == torch.float32
    assert ddf.dtype == torch.float32 and torch.equal(ddf, expected_ddf)
    assert warped.dtype == torch.float32
    torch.testing.assert_close(warped, expected_warp, atol=1e-2, rtol=0)  # only the bf16 image was rounded


def test_gvsl_affine_and_displacement_stay_fp32_under_autocast():
    from gvsl.nets import GVSL

    torch.manual_seed(0)
    model = GVSL(channels=(8,) * 9, affine_channels=8, local_head_channels=8)
    with torch.no_grad():  # a non-zero head, so that the affine is not the exact identity
        model.affine_head.translation.bias.fill_(0.5)
    a, b = torch.rand(1, 1, 16, 16, 16), torch.rand(1, 1, 16, 16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(a, b)
    assert out.affine.dtype == torch.float32 and out.ddf.dtype == torch.float32
    torch.testing.assert_close(out.ddf, compose_affine_ddf(out.affine, out.flow.float()), atol=0, rtol=0)
