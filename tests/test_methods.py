"""Every pre-training method: its loss falls, its pretext task is not trivial, the engine resumes it
bit for bit, and bad settings fail with a clear message."""

import collections
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from gvsl.bank import VolumeBank
from gvsl.checkpoint import load_backbone, load_file
from gvsl.errors import GVSLInputError
from gvsl.methods import BASELINES, METHOD_TITLES, PRETRAIN_METHODS, TABLE1_METHODS, build_method
from gvsl.methods.augment import CUBE_ROTATIONS, random_flips, rotate
from gvsl.methods.byol import target_momentum
from gvsl.methods.simclr import SimCLR
from gvsl.nets import UNet3D
from gvsl.pretrain import PretrainConfig, pretrain
from gvsl.runtime import setup_distributed

CHANNELS = (8, 16, 16, 16, 16, 16, 16, 8, 8)
CROP = (16, 16, 16)
QUICK_SPATIAL = dict(elastic_alpha=(0.0, 2.0), elastic_sigma=(2.0, 3.0))
#: small settings per method, so that each runs in a second
OPTIONS = {
    **{
        key: dict(affine_channels=16, local_head_channels=8, spatial=QUICK_SPATIAL)
        for key in ("gvsl", "no_zmatch", "no_fundament", "no_affine")
    },
    **{key: dict(spatial=QUICK_SPATIAL, projection_dim=16) for key in ("simclr", "byol", "simsiam")},
    "deepcluster": dict(clusters=3, recluster_every=3, crop_set=12),
    "inpainting": dict(mask_fraction=0.1),
}


def volumes(n=4, shape=(20, 20, 20), seed=0):
    """Blobs at random places on a noisy background, in [0, 1]."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*(np.linspace(-1, 1, s) for s in shape), indexing="ij"))
    out = []
    for _ in range(n):
        centre = rng.uniform(-0.4, 0.4, size=(3, 1, 1, 1))
        blob = (np.sqrt(((grid - centre) ** 2).sum(0)) < rng.uniform(0.3, 0.5)).astype(np.float32)
        out.append(np.clip(0.2 + 0.6 * blob + 0.05 * rng.standard_normal(shape), 0, 1).astype(np.float32))
    return out


def config(method, **kw):
    return PretrainConfig(
        **{
            **dict(
                method=method,
                iterations=6,
                batch_size=2,
                crop=CROP,
                seed=1,
                checkpoint_every=2,
                log_every=1,  # the tests read every step's log
                channels=CHANNELS,
                lr=1e-3,
                device="cpu",
                options=OPTIONS.get(method, {}),
            ),
            **kw,
        }
    )


def test_the_table1_vocabulary_lives_in_one_place():
    assert TABLE1_METHODS[0] == "scratch" and TABLE1_METHODS[-1] == "gvsl"
    assert list(BASELINES) == [
        "models_genesis",
        "rotation",
        "simclr",
        "denoising",
        "inpainting",
        "deepcluster",
        "simsiam",
        "byol",
    ]
    assert set(METHOD_TITLES) == set(TABLE1_METHODS)
    from gvsl import pipeline
    from gvsl.report import METHOD_NAMES

    assert pipeline.METHODS == TABLE1_METHODS and METHOD_NAMES is METHOD_TITLES


@pytest.mark.parametrize("key", list(PRETRAIN_METHODS))
def test_loss_falls_when_fitting_one_batch(key):
    """Twenty steps on one fixed batch (same crops, same augmentations) must lower the method's loss."""
    method = build_method(key, OPTIONS.get(key))
    torch.manual_seed(0)
    model = method.build(1, CHANNELS)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    bank = VolumeBank(volumes())
    generator = torch.Generator().manual_seed(0)
    context = setup_distributed("cpu")[0]
    method.before_step(model, 0, bank, CROP, generator, optimizer, context)
    crops = method.sample(bank, 2, CROP, generator)
    losses = []
    for iteration in range(20):
        net_inputs, targets = method.inputs(crops, torch.Generator().manual_seed(1))
        terms = method.loss(model(**net_inputs), targets)
        optimizer.zero_grad()
        terms.total.backward()
        optimizer.step()
        method.after_step(model, iteration, 20)
        losses.append(float(terms.total.detach()))
    assert all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.02 * abs(np.mean(losses[:3])), losses


@pytest.mark.parametrize("key", list(PRETRAIN_METHODS))
def test_resumed_run_is_bit_identical(key, tmp_path, interrupted_pretrain):
    """Interrupted right after the checkpoint at iteration 2 and resumed, every method ends with the weights,
    the training log and the held-out losses of the uninterrupted run (DeepCluster re-clusters at 0 and 3)."""
    data = volumes()
    from gvsl.pretext import heldout_pairs
    from tests.test_pretrain import labelled_cases

    heldout = heldout_pairs(labelled_cases(), CROP, pairs=4)
    settings = dict(eval_every=2)
    full = pretrain(data, tmp_path / "full", config(key, **settings), progress=False, heldout=heldout)
    interrupted_pretrain(2, data, tmp_path / "cut", config(key, **settings), progress=False, heldout=heldout)
    resumed = pretrain(data, tmp_path / "cut", config(key, **settings), resume=True, progress=False, heldout=heldout)
    a, b = load_file(full.checkpoint), load_file(resumed.checkpoint)
    assert a["iteration"] == b["iteration"] == 6
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    logs = {run: tmp_path / run / "dvclive" / "plots" / "metrics" for run in ("full", "cut")}
    train = [pd.read_csv(logs[run] / "train" / "total.tsv", sep="\t") for run in logs]
    assert train[1]["step"].tolist() == list(range(6)) and train[0]["total"].tolist() == train[1]["total"].tolist()
    heldout_loss = [pd.read_csv(logs[run] / "heldout_loss" / "total.tsv", sep="\t") for run in logs]
    assert heldout_loss[1]["step"].tolist() == [0, 2, 4, 6]
    assert heldout_loss[0]["total"].tolist() == heldout_loss[1]["total"].tolist()
    backbone = load_backbone(resumed.backbone)
    assert isinstance(backbone, UNet3D) and load_file(resumed.backbone)["metadata"]["method"] == key


@pytest.mark.parametrize("key", ["rotation", "simclr", "byol", "simsiam", "deepcluster"])
def test_encoder_only_methods_leave_the_decoder_at_scratch(key, tmp_path):
    result = pretrain(volumes(), tmp_path, config(key, iterations=2), progress=False)
    trained = load_backbone(result.backbone).state_dict()
    torch.manual_seed(1)
    scratch = UNet3D(1, CHANNELS).state_dict()
    assert all(torch.equal(trained[k], scratch[k]) for k in trained if k.startswith("up."))
    assert not all(torch.equal(trained[k], scratch[k]) for k in trained if k.startswith("down."))


def test_rotation_labels_are_balanced_and_the_rotation_is_the_one_labelled():
    method = build_method("rotation")
    crops = torch.rand(400, 1, 6, 6, 6)
    generator = torch.Generator().manual_seed(0)
    from gvsl.methods import Crops

    net_inputs, targets = method.inputs(Crops(crops), generator)
    counts = collections.Counter(targets["labels"].tolist())
    assert sorted(counts) == list(range(10))
    # 400 draws of 10 equally likely classes: each count is 40 ± 6 (sd); a class below 15 or above 65 is > 4 sd off
    assert all(15 < c < 65 for c in counts.values()), counts
    # the ten classes are ten different turns: no two give the same volume
    x = torch.rand(1, 1, 5, 5, 5)
    turned = [rotate(x, [label]) for label in range(len(CUBE_ROTATIONS))]
    assert all(not torch.equal(turned[i], turned[j]) for i in range(10) for j in range(i))
    # each labelled input is its crop turned by that label
    for index in range(5):
        assert torch.equal(net_inputs["image"][index], rotate(crops[index : index + 1], [targets["labels"][index]])[0])


def test_simclr_positives_are_two_views_of_one_volume():
    bank = VolumeBank([np.full((20, 20, 20), float(i), dtype=np.float32) for i in range(5)])
    method = SimCLR({"view_shift": 0.25})
    for _ in range(10):
        crops = method.sample(bank, 3, CROP, torch.Generator().manual_seed(_))
        # constant volumes: a crop's value names its volume; the two views come from the same one
        assert torch.equal(crops.first.amax(dim=(1, 2, 3, 4)), crops.second.amax(dim=(1, 2, 3, 4)))
    coordinates = np.stack(np.meshgrid(*(np.arange(20.0),) * 3, indexing="ij"))[0].astype(np.float32)
    shifted = VolumeBank([coordinates, coordinates]).sample_views(50, (8, 8, 8), torch.Generator().manual_seed(0), 2)
    offsets = (shifted[1][:, 0, 0, 0, 0] - shifted[0][:, 0, 0, 0, 0]).abs()
    assert offsets.max() <= 2 and offsets.max() > 0  # overlapping, not identical


def test_simclr_loss_is_nt_xent():
    """MONAI's ContrastiveLoss, as SimCLR uses it, against NT-Xent written out from the paper."""
    z_1, z_2 = torch.randn(4, 8), torch.randn(4, 8)
    temperature = 0.5
    z = F.normalize(torch.cat([z_1, z_2]), dim=1)
    similarity = z @ z.T / temperature
    similarity.fill_diagonal_(-math.inf)
    positives = torch.cat([torch.arange(4, 8), torch.arange(0, 4)])
    reference = F.cross_entropy(similarity, positives)
    ours = SimCLR({"temperature": temperature}).loss({"z_1": z_1, "z_2": z_2}, {}).total
    torch.testing.assert_close(ours, reference)


def test_byol_target_is_a_moving_average_without_gradient():
    method = build_method("byol", {"projection_dim": 8, "momentum": 0.9})
    torch.manual_seed(0)
    model = method.build(1, CHANNELS)
    assert not any(p.requires_grad for p in model.target_parameters())
    online = [p.detach().clone() for p in model.online_parameters()]
    with torch.no_grad():
        for p in model.online_parameters():
            p.add_(1.0)
    before = [p.detach().clone() for p in model.target_parameters()]
    method.after_step(model, 0, 10)
    tau = target_momentum(0.9, 0, 10)
    assert tau == pytest.approx(0.9)  # the first update uses the base momentum
    for target, old, new in zip(model.target_parameters(), before, (p + 1.0 for p in online)):
        torch.testing.assert_close(target, tau * old + (1 - tau) * new)
    assert target_momentum(0.996, 100, 100) == 1.0
    # only the encoder has a moving target: the decoder is not used by BYOL
    names = {name for name, _ in model.target_backbone.named_parameters()}
    assert len(list(model.target_parameters())) == len([n for n in names if not n.startswith("up.")]) + len(
        list(model.target_projector.parameters())
    )


def test_siamese_losses_stop_the_gradient_at_the_target_branch():
    for key in ("byol", "simsiam"):
        method = build_method(key, {"projection_dim": 8})
        z = torch.randn(2, 8, requires_grad=True)
        p = torch.randn(2, 8, requires_grad=True)
        outputs = (
            {"q_1": p, "q_2": p, "z_1": z, "z_2": z} if key == "byol" else {"p_1": p, "p_2": p, "z_1": z, "z_2": z}
        )
        method.loss(outputs, {}).total.backward()
        assert z.grad is None and p.grad is not None


def test_deepcluster_labels_come_from_kmeans_of_its_crop_set():
    method = build_method("deepcluster", {"clusters": 2, "crop_set": 12, "recluster_every": 5})
    torch.manual_seed(0)
    model = method.build(1, CHANNELS)
    optimizer = torch.optim.Adam(model.parameters())
    bank = VolumeBank(volumes())
    context = setup_distributed("cpu")[0]
    method.before_step(model, 0, bank, CROP, torch.Generator().manual_seed(0), optimizer, context)
    assert model.clustered and set(model.labels.tolist()) == {0, 1}
    # the labels are the nearest centroid of each crop's normalised pooled feature
    places = list(zip(model.crop_volume.tolist(), map(tuple, model.crop_start.tolist())))
    with torch.no_grad():
        features = model.embed(bank.crops_at(places, CROP))
    assert torch.equal(torch.cdist(model.cluster_space(features), model.centroids).argmin(dim=1), model.labels)
    # steps draw crops of the set with their cluster's label, from both clusters
    drawn = [method.sample(bank, 2, CROP, torch.Generator().manual_seed(s)).labels for s in range(10)]
    assert set(torch.cat(drawn).tolist()) == {0, 1}


def test_models_genesis_uses_the_authors_transform_set():
    method = build_method("models_genesis")
    corruption = method.corruption
    assert corruption.outpaint_prob == pytest.approx(0.72)
    assert 0.9 * 0.2 == pytest.approx((1 - 0.72) * corruption.inpaint_prob)  # in-painting: 18 % of samples
    assert (corruption.max_inpaint_blocks, corruption.inpaint_sides) == (5, (1 / 6, 1 / 3))
    assert (corruption.local_shuffle_prob, corruption.invert_prob) == (0.5, 0.5)
    net_inputs, targets = method.inputs(
        method.sample(VolumeBank(volumes()), 2, CROP, torch.Generator().manual_seed(0)),
        torch.Generator().manual_seed(0),
    )
    assert not torch.equal(net_inputs["image"], targets["target"])
    # flips: up to three along random axes with p each; p = 0 never flips, p = 1 flips three times
    images = torch.rand(64, 1, 4, 4, 4)
    (unchanged,) = random_flips(torch.Generator().manual_seed(0), images, probability=0.0)
    assert torch.equal(unchanged, images)
    flipped, same = random_flips(torch.Generator().manual_seed(0), images, images.clone(), probability=1.0)
    assert torch.equal(flipped, same) and not torch.equal(flipped, images)
    assert torch.equal(flipped.flatten().sort().values, images.flatten().sort().values)  # voxels only move


def test_the_decreasing_intensity_curve_inverts_the_order():
    from gvsl.views import bezier_intensity_map

    ramp = torch.linspace(0, 1, 11)
    points = torch.tensor([[0.3, 0.6], [0.7, 0.2]])
    rising, falling = bezier_intensity_map(ramp, points), bezier_intensity_map(ramp, points, decreasing=True)
    assert (rising.diff() >= 0).all() and (falling.diff() <= 0).all()
    assert falling[0] == pytest.approx(1.0) and falling[-1] == pytest.approx(0.0)


def test_inpainting_loss_only_counts_the_masked_voxels():
    method = build_method("inpainting")
    from gvsl.methods import Crops

    clean = torch.rand(2, 1, 16, 16, 16)
    net_inputs, targets = method.inputs(Crops(clean), torch.Generator().manual_seed(0))
    mask = targets["mask"]
    # every sample loses at least a quarter of its voxels, as Pathak et al.'s masks remove
    assert all(0.25 <= float(m.float().mean()) < 0.6 for m in mask)
    assert (net_inputs["image"][mask] == 0).all()
    assert torch.equal(net_inputs["image"][~mask], clean[~mask])
    restored = clean.clone()
    restored[~mask] = 1 - restored[~mask]  # wrong everywhere outside the boxes: the loss does not see it
    assert float(method.loss({"restored": restored}, targets).total) == 0.0


@pytest.mark.parametrize(
    "key, options, message",
    [
        ("simclr", {"temperature": 0}, "temperature must be > 0"),
        ("simclr", {"tau": 0.1}, "unknown settings \\['tau'\\]"),
        ("byol", {"momentum": 1.0}, "momentum must be in \\[0, 1\\)"),
        ("deepcluster", {"clusters": 20, "crop_set": 10}, "crop_set \\(10\\) must hold at least one crop per cluster"),
        ("denoising", {"noise_std": 0}, "noise_std must be > 0"),
        ("models_genesis", {"paint_prob": 1.5}, "paint_prob must be a probability"),
        ("inpainting", {"mask_fraction": 1.0}, "mask_fraction must be in \\(0, 1\\)"),
        ("gvsl", {"spatial": {"shear": 2.0}}, "shear must be < π/2"),
        (
            "gvsl",
            {"similarity": "ssim"},
            r"^pretrain.options.gvsl: similarity: unknown 'ssim'; valid: \['ncc', 'mi'\]",
        ),
        ("no_fundament", {"similarity": "NCC"}, r"similarity: unknown 'NCC'; valid: \['ncc', 'mi'\]$"),
        ("simsiam", "fast", "must be a mapping of settings"),
    ],
)
def test_bad_options_name_the_setting(key, options, message):
    with pytest.raises(GVSLInputError, match=message):
        build_method(key, options)


def test_the_similarity_option_round_trips_and_reaches_the_loss():
    assert build_method("gvsl").options.similarity == "ncc"
    assert build_method("gvsl").criterion.similarity == "ncc"
    method = build_method("no_affine", {"similarity": "mi"})
    assert (method.options.similarity, method.criterion.similarity) == ("mi", "mi")
    again = build_method("no_affine", method.options_dict())
    assert again.options == method.options and again.options_dict()["similarity"] == "mi"
    run = config("gvsl", options={**OPTIONS["gvsl"], "similarity": "mi"})
    assert PretrainConfig.from_dict(run.to_dict()).build_method().options.similarity == "mi"
    # what it trains on: the MI term replaces the NCC term
    crops = method.sample(VolumeBank(volumes()), 2, CROP, torch.Generator().manual_seed(0))
    net_inputs, targets = method.inputs(crops, torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    terms = method.loss(method.build(1, CHANNELS)(**net_inputs), targets)
    assert list(terms.parts) == ["mi", "smooth", "mse"] and float(terms["mi"].detach()) < 0


def test_bad_run_settings_for_a_method_are_refused():
    with pytest.raises(GVSLInputError, match="rotation: quarter turns about every axis need a cubic crop"):
        config("rotation", crop=(16, 16, 8))
    with pytest.raises(GVSLInputError, match="simclr: batch_size must be >= 2"):
        config("simclr", batch_size=1)
    with pytest.raises(GVSLInputError, match="unknown pre-training method 'moco'"):
        build_method("moco")


@pytest.mark.slow
@pytest.mark.parametrize("key", ["deepcluster", "byol", "rotation"])
def test_ddp_replicas_stay_identical(key, tmp_path):
    """Two gloo ranks: after re-clusterings (DeepCluster), target updates (BYOL) and an encoder-only graph
    (unused decoder parameters), both replicas hold the same weights and buffers. BatchNorm's running
    statistics are the exception: each rank updates them from its own batch and DDP re-broadcasts
    rank 0's at every forward (the checkpoint keeps rank 0's)."""
    repo = Path(__file__).resolve().parents[1]
    script = tmp_path / "job.py"
    script.write_text(
        textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(repo)!r})
        import torch, torch.distributed as dist
        from gvsl.methods import PRETRAIN_METHODS
        from gvsl.pretrain import pretrain
        from tests.test_methods import config, volumes

        method = PRETRAIN_METHODS[{key!r}]
        original = method.after_step

        def after_step(self, model, iteration, iterations):
            original(self, model, iteration, iterations)
            if iteration == iterations - 1:
                torch.save(model.state_dict(), {str(tmp_path)!r} + f"/rank{{dist.get_rank()}}.pt")

        method.after_step = after_step
        pretrain(volumes(), {str(tmp_path / "run")!r}, config({key!r}, iterations=4, batch_size=1), progress=False)
    """)
    )
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone", str(script)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    batch_statistics = ("running_mean", "running_var", "num_batches_tracked")
    for name in ranks[0]:
        if not name.endswith(batch_statistics):
            assert torch.equal(ranks[0][name], ranks[1][name]), name
