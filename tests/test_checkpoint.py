import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gvsl.checkpoint import (
    atomic_save,
    load_backbone,
    load_file,
    load_model,
    load_official,
    official_to_kit_key,
    save_backbone,
    save_model,
)
from gvsl.errors import GVSLInputError
from gvsl.nets import GVSL, UNet3D

TINY = (8, 16, 16, 16, 16, 16, 16, 8, 8)


# --- an independent re-statement of the authors' architecture, with their parameter names -------------
class _Double(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.double_conv = nn.Sequential(
            nn.Conv3d(cin, cout, 3, padding=1),
            nn.GroupNorm(cout // 8, cout),
            nn.LeakyReLU(0.2),
            nn.Conv3d(cout, cout, 3, padding=1),
            nn.GroupNorm(cout // 8, cout),
            nn.LeakyReLU(0.2),
        )

    def forward(self, x):
        return self.double_conv(x)


class AuthorsStyleGVSL(nn.Module):
    """SPEC's description of the authors' network, named as in their state dict."""

    def __init__(self, chs, head=16, aff=16):
        super().__init__()
        self.unet = nn.Module()
        self.unet.inc = _Double(1, chs[0])
        for i in range(1, 5):
            down = nn.Module()
            down.maxpool_conv = nn.Sequential(nn.MaxPool3d(2), _Double(chs[i - 1], chs[i]))
            setattr(self.unet, f"down{i}", down)
        below, skips = [chs[4], chs[5], chs[6], chs[7]], [chs[3], chs[2], chs[1], chs[0]]
        for i in range(4):
            up = nn.Module()
            up.conv = _Double(below[i] + skips[i], chs[5 + i])
            setattr(self.unet, f"up{i + 1}", up)
        self.f_conv = _Double(2 * chs[4], aff)
        self.sp_conv = _Double(2 * chs[8], head)
        self.res_conv = nn.Sequential(
            nn.Conv3d(chs[8], head, 3, padding=1),
            nn.GroupNorm(head // 4, head),
            nn.LeakyReLU(0.2),
            nn.Conv3d(head, 1, 1),
        )
        self.out_flow = nn.Conv3d(head, 3, 3, padding=1)
        self.fc_rot, self.fc_scl, self.fc_trans = nn.Linear(aff, 3), nn.Linear(aff, 3), nn.Linear(aff, 3)
        self.fc_shear = nn.Linear(aff, 6)
        for p in self.parameters():  # non-trivial values everywhere, GroupNorm affine included
            nn.init.normal_(p, std=0.2)

    def features(self, x):
        size = x.shape[2:]
        pad = [(16 - s % 16) % 16 for s in size]
        x = F.pad(
            x, [pad[2] // 2, pad[2] - pad[2] // 2, pad[1] // 2, pad[1] - pad[1] // 2, pad[0] // 2, pad[0] - pad[0] // 2]
        )
        u = self.unet
        x1 = u.inc.double_conv(x)
        x2 = u.down1.maxpool_conv(x1)
        x3 = u.down2.maxpool_conv(x2)
        x4 = u.down3.maxpool_conv(x3)
        x5 = u.down4.maxpool_conv(x4)
        h = x5
        for up, skip in ((u.up1, x4), (u.up2, x3), (u.up3, x2), (u.up4, x1)):
            h = F.interpolate(h, scale_factor=2, mode="trilinear", align_corners=True)
            h = up.conv.double_conv(torch.cat([skip, h], 1))
        return x5, h[
            :,
            :,
            pad[0] // 2 : pad[0] // 2 + size[0],
            pad[1] // 2 : pad[1] // 2 + size[1],
            pad[2] // 2 : pad[2] // 2 + size[2],
        ]


def _authors_forward_parts(net, x):
    g, loc = net.features(x)
    restored = net.res_conv(loc)
    # The authors' affine head up to the clamps (their matrix assembly is not differentiable).
    code = net.f_conv.double_conv(torch.cat([g, g], 1)).mean(dim=(2, 3, 4))
    rotation = torch.clamp(net.fc_rot(code), -1, 1) * torch.pi / 9
    return g, loc, restored, rotation


def test_official_key_mapping():
    assert official_to_kit_key("unet.inc.double_conv.0.weight") == "backbone.stem.0.weight"
    assert official_to_kit_key("unet.down1.maxpool_conv.1.double_conv.0.weight") == "backbone.down.0.0.weight"
    assert official_to_kit_key("unet.up4.conv.double_conv.4.bias") == "backbone.up.3.4.bias"
    assert official_to_kit_key("fc_shear.weight") == "affine_head.shear.weight"
    assert official_to_kit_key("res_conv.3.weight") == "restoration_head.3.weight"
    assert official_to_kit_key("something.else") is None


@pytest.mark.parametrize("wrap", ["file", "dict", "dataparallel"])
def test_load_official_reproduces_authors_features_and_restoration(tmp_path, wrap):
    torch.manual_seed(1)
    theirs = AuthorsStyleGVSL(TINY).eval()
    state = theirs.state_dict()
    if wrap == "dataparallel":
        state = {f"module.{k}": v for k, v in state.items()}
    if wrap == "file":
        torch.save(state, tmp_path / "GVSL_epoch_1000.pth")
        ours = load_official(tmp_path / "GVSL_epoch_1000.pth").eval()
    else:
        ours = load_official(state).eval()
    assert ours.config.channels == TINY and ours.config.affine_channels == 16
    x = torch.rand(2, 1, 20, 18, 16)
    with torch.no_grad():
        g_ref, l_ref, r_ref, rot_ref = _authors_forward_parts(theirs, x)
        g, loc = ours.backbone(x)
        restored = ours.restoration_head(loc)
        code = ours.affine_head.block(torch.cat([g, g], 1)).mean(dim=(2, 3, 4))
        rot = torch.clamp(ours.affine_head.rotation(code), -1, 1) * torch.pi / 9
    assert torch.allclose(g, g_ref, atol=1e-5)
    assert torch.allclose(loc, l_ref, atol=1e-5)
    assert torch.allclose(restored, r_ref, atol=1e-5)
    assert torch.allclose(rot, rot_ref, atol=1e-6)
    assert torch.equal(ours.deformable_head.flow.weight, theirs.out_flow.weight)


def test_official_backbone_only_and_errors(tmp_path):
    theirs = AuthorsStyleGVSL(TINY)
    backbone_state = {k: v for k, v in theirs.state_dict().items() if k.startswith("unet.")}
    with pytest.raises(GVSLInputError, match="backbone weights only; load it with gvsl.checkpoint.load_backbone"):
        load_official(backbone_state)
    backbone = load_backbone(backbone_state)
    assert torch.equal(backbone.stem[0].weight, theirs.unet.inc.double_conv[0].weight)
    with pytest.raises(GVSLInputError, match="unrecognised keys"):
        load_official({**theirs.state_dict(), "classifier.weight": torch.zeros(2)})
    partial = dict(theirs.state_dict())
    del partial["unet.up2.conv.double_conv.0.weight"]
    with pytest.raises(GVSLInputError, match="lacks backbone weight"):
        load_official(partial)


def test_model_checkpoint_round_trip_rebuilds_from_file_alone(tmp_path):
    model = GVSL.variant("no_affine", channels=TINY, local_head_channels=8)
    path = save_model(tmp_path / "ckpt" / "model.pt", model, iteration=7)
    assert load_file(path)["iteration"] == 7
    again = load_model(path)
    assert again.config == model.config and again.affine_head is None
    for (n1, p1), (n2, p2) in zip(model.state_dict().items(), again.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2)
    assert list(tmp_path.joinpath("ckpt").iterdir()) == [path]  # no temporary files left behind


def test_backbone_round_trip_and_from_model_checkpoint(tmp_path):
    model = GVSL(channels=TINY, affine_channels=16, local_head_channels=8)
    path = save_backbone(tmp_path / "backbone.pt", model.backbone, variant="gvsl", iterations=3)
    backbone = load_backbone(path)
    x = torch.rand(1, 1, 16, 16, 16)
    assert torch.equal(backbone(x)[1], model.backbone(x)[1])
    assert load_file(path)["metadata"] == {"variant": "gvsl", "iterations": 3}
    assert torch.equal(
        load_backbone(save_model(tmp_path / "m.pt", model)).stem[0].weight, model.backbone.stem[0].weight
    )


class _Evil:
    def __reduce__(self):
        return (print, ("executed",))


def test_unsafe_truncated_and_missing_files_are_refused(tmp_path):
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as f:
        pickle.dump({"state_dict": _Evil()}, f)
    with pytest.raises(GVSLInputError, match="evil.pt: not a readable weights-only"):
        load_file(evil)
    good = atomic_save({"state_dict": {"w": torch.zeros(100)}}, tmp_path / "good.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(GVSLInputError, match="truncated.pt"):
        load_file(truncated)
    with pytest.raises(GVSLInputError, match="missing.pt: checkpoint file not found"):
        load_model(tmp_path / "missing.pt")
    with pytest.raises(GVSLInputError, match="expecting a 'gvsl-kit/model/1' checkpoint"):
        load_model(good)


def test_architecture_mismatch_is_reported(tmp_path):
    path = save_model(tmp_path / "m.pt", GVSL(channels=TINY, affine_channels=16, local_head_channels=8))
    ckpt = load_file(path)
    ckpt["config"]["channels"] = [8, 16, 16, 16, 32, 16, 16, 8, 8]
    with pytest.raises(GVSLInputError, match="does not fit the inferred architecture"):
        load_model(ckpt)


def test_a_backbone_records_its_environment_and_loads_weights_only(tmp_path):
    from gvsl.provenance import environment

    path = save_backbone(tmp_path / "backbone.pt", UNet3D(1, TINY), method="gvsl", environment=environment())
    state = torch.load(path, map_location="cpu", weights_only=True)  # plain types only: no torch version objects
    recorded = state["metadata"]["environment"]
    assert set(recorded) == {"python", "torch", "monai", "numpy", "device"}
    assert recorded["torch"] == str(torch.__version__) and recorded["device"].startswith("cpu")
    load_backbone(path)
