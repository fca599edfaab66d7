import itertools
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from gvsl.checkpoint import load_backbone, load_file
from gvsl.data import Case
from gvsl.data.cohorts.phantom import generate_subject
from gvsl.errors import GVSLInputError
from gvsl.pretext import heldout_pairs
from gvsl.pretrain import (
    NonFiniteLossError,
    PretrainConfig,
    VolumeBank,
    lr_factor,
    pretrain,
)

TINY = dict(channels=(8, 16, 16, 16, 16, 16, 16, 8, 8))
# Small spatial ranges keep the tiny crops mostly inside the field of view.
QUICK_SPATIAL = dict(elastic_alpha=(0.0, 2.0), elastic_sigma=(2.0, 3.0))
GVSL_OPTIONS = dict(affine_channels=16, local_head_channels=8, spatial=QUICK_SPATIAL)


def volumes(n=4, shape=(24, 24, 24), seed=0):
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*(np.linspace(-1, 1, s) for s in shape), indexing="ij"))
    out = []
    for _ in range(n):
        centre = rng.uniform(-0.3, 0.3, size=(3, 1, 1, 1))
        radius = rng.uniform(0.3, 0.5)
        blob = (np.sqrt(((grid - centre) ** 2).sum(0)) < radius).astype(np.float32)
        out.append(0.2 + 0.6 * blob + 0.05 * rng.standard_normal(shape).astype(np.float32))
    return out


def config(**kw):
    base = dict(
        method="gvsl",
        iterations=4,
        batch_size=2,
        crop=(16, 16, 16),
        seed=3,
        checkpoint_every=2,
        log_every=1,  # the tests read every step's log
        device="cpu",
        options=GVSL_OPTIONS,
        **TINY,
    )
    base.update(kw)
    return PretrainConfig(**base)


def labelled_cases(n=3, shape=(16, 16, 16), seed=1):
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*(np.arange(s) for s in shape), indexing="ij"))
    cases = []
    for index in range(n):
        label = (np.sqrt(((grid - rng.uniform(6, 10, size=(3, 1, 1, 1))) ** 2).sum(0)) < 4).astype(np.uint8)
        image = (0.2 + 0.6 * label + 0.05 * rng.standard_normal(shape)).astype(np.float32)
        cases.append(Case(f"held{index}", image, label, None, np.eye(4)))
    return cases


def test_resumed_run_ends_with_the_same_weights_and_logs_with_heldout_evaluation(tmp_path, interrupted_pretrain):
    data = volumes()
    heldout = heldout_pairs(labelled_cases(), (16, 16, 16), pairs=4)
    settings = dict(eval_every=1, lr_schedule="cosine", warmup=1, lr=1e-3)
    full = pretrain(data, tmp_path / "full", config(**settings), progress=False, heldout=heldout)
    # interrupt the same run right after its checkpoint at iteration 2 (and its held-out evaluation)
    interrupted_pretrain(2, data, tmp_path / "cut", config(**settings), progress=False, heldout=heldout)
    resumed = pretrain(data, tmp_path / "cut", config(**settings), resume=True, progress=False, heldout=heldout)
    a, b = load_file(full.checkpoint), load_file(resumed.checkpoint)
    assert a["iteration"] == b["iteration"] == 4
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    # The log holds each iteration once, and the loss terms of every variant component.
    metrics = tmp_path / "cut" / "dvclive" / "plots" / "metrics"
    log = pd.read_csv(metrics / "train" / "total.tsv", sep="\t")
    assert log["step"].tolist() == [0, 1, 2, 3]
    for term in ("ncc", "smooth", "mse"):
        assert (metrics / "train" / f"{term}.tsv").exists()
    # Held-out rows: after 0, 1, 2, 3 and 4 iterations, once each, equal to the uninterrupted run's.
    logged = [("heldout", name) for name in ("ncc", "identity_ncc", "identity_dice", "affine_dice", "warped_dice")]
    logged += [("misalignment", name) for name in ("recovered", "affine_dice", "translation_correlation")]
    for folder, name in logged:
        cut = pd.read_csv(metrics / folder / f"{name}.tsv", sep="\t")
        whole = pd.read_csv(tmp_path / "full" / "dvclive" / "plots" / "metrics" / folder / f"{name}.tsv", sep="\t")
        assert cut["step"].tolist() == [0, 1, 2, 3, 4]
        np.testing.assert_array_equal(cut[name], whole[name])  # NaN: a correlation of a constant translation
    record = json.loads((tmp_path / "cut" / "pretext.json").read_text())
    assert record == json.loads((tmp_path / "full" / "pretext.json").read_text())
    assert (record["first"]["iteration"], record["last"]["iteration"], len(record["pairs"])) == (0, 4, 4)
    # one known misalignment per distinct fixed subject of the held-out pairs
    subjects = sorted({fixed for fixed, _ in record["pairs"]})
    assert sorted(record["last"]["misalignment"]["subjects"]) == subjects


def test_a_run_with_mutual_information_logs_its_term_and_scores_it_on_the_heldout_pairs(tmp_path):
    heldout = heldout_pairs(labelled_cases(), (16, 16, 16), pairs=2)
    options = {**GVSL_OPTIONS, "similarity": "mi"}
    result = pretrain(volumes(), tmp_path, config(iterations=2, options=options), progress=False, heldout=heldout)
    assert set(result.final_terms) == {"total", "mi", "smooth", "mse"}
    metrics = tmp_path / "dvclive" / "plots" / "metrics"
    assert (metrics / "train" / "mi.tsv").exists() and not (metrics / "train" / "ncc.tsv").exists()
    assert (metrics / "heldout_loss" / "mi.tsv").exists()
    last = json.loads((tmp_path / "pretext.json").read_text())["last"]["mean"]
    assert {"ncc", "identity_ncc", "mi", "identity_mi", "warped_dice"} <= set(last) and last["mi"] < 0


def test_resuming_with_another_schedule_or_without_the_heldout_record_is_refused(tmp_path):
    heldout = heldout_pairs(labelled_cases(), (16, 16, 16), pairs=2)
    pretrain(volumes(), tmp_path, config(iterations=2, lr_schedule="cosine", warmup=1), progress=False, heldout=heldout)
    with pytest.raises(GVSLInputError, match="other iterations than the checkpoint"):
        pretrain(volumes(), tmp_path, config(lr_schedule="cosine", warmup=1), resume=True, progress=False)
    with pytest.raises(GVSLInputError, match="other lr, warmup"):
        pretrain(
            volumes(),
            tmp_path,
            config(iterations=2, lr=0.5, lr_schedule="cosine", warmup=0),
            resume=True,
            progress=False,
        )
    (tmp_path / "pretext.json").unlink()
    with pytest.raises(GVSLInputError, match="pretext.json: missing"):
        pretrain(
            volumes(),
            tmp_path,
            config(iterations=2, lr_schedule="cosine", warmup=1),
            resume=True,
            progress=False,
            heldout=heldout,
        )


def test_heldout_cases_without_foreground_are_refused():
    cases = labelled_cases()
    cases[1].label[:] = 0
    with pytest.raises(GVSLInputError, match="held-out case held1: no foreground label"):
        heldout_pairs(cases, (16, 16, 16))


def test_heldout_evaluation_changes_nothing_in_the_run(tmp_path):
    heldout = heldout_pairs(labelled_cases(), (16, 16, 16), pairs=2)
    plain = pretrain(volumes(), tmp_path / "plain", config(), progress=False)
    evaluated = pretrain(volumes(), tmp_path / "eval", config(eval_every=1), progress=False, heldout=heldout)
    a, b = load_file(plain.checkpoint)["model"], load_file(evaluated.checkpoint)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # a variant without a Z-matching head has nothing to register (no held-out registration log, no
    # pretext.json), but its loss is measured on the held-out subjects
    pretrain(volumes(), tmp_path / "mse", config(method="no_zmatch"), progress=False, heldout=heldout)
    logs = tmp_path / "mse" / "dvclive" / "plots" / "metrics"
    assert not (tmp_path / "mse" / "pretext.json").exists() and not (logs / "heldout").exists()
    heldout_loss = pd.read_csv(logs / "heldout_loss" / "mse.tsv", sep="\t")
    assert heldout_loss["step"].tolist() == [0, 4]  # before the first iteration and at the end


def test_cosine_schedule_warms_up_then_decays_to_zero():
    schedule = config(iterations=10, lr_schedule="cosine", warmup=2)
    factors = [lr_factor(schedule, i) for i in range(10)]
    assert factors[:3] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert all(x > y for x, y in itertools.pairwise(factors[2:]))
    assert lr_factor(schedule, 10) == pytest.approx(0.0, abs=1e-12)
    assert {lr_factor(config(), i) for i in range(4)} == {1.0}


def test_outputs_backbone_with_config_and_provenance(tmp_path):
    result = pretrain(
        volumes(),
        tmp_path,
        config(method="no_zmatch", iterations=2),
        progress=False,
        provenance={"dataset": "unit-test"},
    )
    backbone = load_backbone(result.backbone)
    assert backbone.channels == TINY["channels"]
    meta = load_file(result.backbone)["metadata"]
    assert meta["method"] == "no_zmatch" and meta["dataset"] == "unit-test" and meta["iterations"] == 2
    assert set(result.final_terms) == {"mse", "total"}


def test_same_seed_same_run_and_existing_output_refused(tmp_path):
    first = pretrain(volumes(), tmp_path / "a", config(iterations=2), progress=False)
    second = pretrain(volumes(), tmp_path / "b", config(iterations=2), progress=False)
    wa, wb = load_file(first.checkpoint)["model"], load_file(second.checkpoint)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    with pytest.raises(GVSLInputError, match="exists: pass --resume"):
        pretrain(volumes(), tmp_path / "a", config(iterations=2), progress=False)


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    pretrain(volumes(), tmp_path, config(iterations=2), progress=False)
    good = load_file(tmp_path / "checkpoint.pt")
    from gvsl import losses

    monkeypatch.setattr(losses, "mse_loss", lambda pred, target: torch.tensor(float("nan")))
    with pytest.raises(NonFiniteLossError, match="non-finite loss at iteration 3"):
        pretrain(volumes(), tmp_path, config(), resume=True, progress=False)
    kept = load_file(tmp_path / "checkpoint.pt")
    assert kept["iteration"] == 2 and all(torch.equal(kept["model"][k], good["model"][k]) for k in kept["model"])


def test_misuse_errors():
    with pytest.raises(GVSLInputError, match="crop .* is larger than the volume"):
        VolumeBank(volumes(shape=(12, 24, 24))).check_crop((16, 16, 16))
    with pytest.raises(GVSLInputError, match="at least two volumes"):
        VolumeBank(volumes(n=1))
    bad = volumes()
    bad[1][3, 3, 3] = np.inf
    with pytest.raises(GVSLInputError, match="volume 1: holds NaN or Inf"):
        VolumeBank(bad)
    with pytest.raises(GVSLInputError, match="method: unknown 'moco'"):
        PretrainConfig(method="moco")
    with pytest.raises(GVSLInputError, match="unknown settings \\['epochs'\\]"):
        PretrainConfig.from_dict({"epochs": 3})
    with pytest.raises(GVSLInputError, match="lr_schedule: unknown 'step'"):
        PretrainConfig(lr_schedule="step")
    with pytest.raises(GVSLInputError, match="warmup \\(10\\) must be shorter than iterations \\(10\\)"):
        PretrainConfig(iterations=10, lr_schedule="cosine", warmup=10)
    with pytest.raises(GVSLInputError, match="crop_jitter must be an integer >= 0, got -1"):
        PretrainConfig(crop_jitter=-1)
    with pytest.raises(GVSLInputError, match="eval_every must be an integer >= 1, got 0"):
        PretrainConfig(eval_every=0)


def test_pairs_are_different_subjects():
    bank = VolumeBank([np.full((16, 16, 16), i, dtype=np.float32) for i in range(3)])
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        a, b = bank.sample_pairs(4, (8, 8, 8), g)
        assert (a[:, 0, 0, 0, 0] != b[:, 0, 0, 0, 0]).all()


def coordinate_volumes(shapes):
    """Channel k of volume i holds each voxel's coordinate along axis k, normalised by that axis' free range
    for a crop of 8 (so equal values mean the same normalised crop position); channel 3 holds i."""
    out = []
    for index, shape in enumerate(shapes):
        grid = np.stack(np.meshgrid(*(np.arange(s, dtype=np.float32) for s in shape), indexing="ij"))
        out.append(np.concatenate([grid, np.full((1, *shape), index, np.float32)]))
    return out


def test_pairs_are_cropped_at_one_position():
    bank = VolumeBank(coordinate_volumes([(20, 20, 20)] * 3))
    g = torch.Generator().manual_seed(0)
    starts = []
    for _ in range(30):
        a, b = bank.sample_pairs(2, (8, 8, 8), g)
        assert (a[:, 3] != b[:, 3]).all()  # different subjects…
        assert torch.equal(a[:, :3], b[:, :3])  # …at the same position
        starts.extend(a[:, :3, 0, 0, 0].tolist())
    assert len({tuple(s) for s in starts}) > 30  # and the position itself varies


def test_pairs_of_different_shapes_share_the_normalised_position_and_jitter_is_bounded():
    shapes = [(20, 20, 20), (32, 24, 16)]
    bank = VolumeBank(coordinate_volumes(shapes))
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        a, b = bank.sample_pairs(1, (8, 8, 8), g)
        corner = {int(a[0, 3, 0, 0, 0]): a[0, :3, 0, 0, 0], int(b[0, 3, 0, 0, 0]): b[0, :3, 0, 0, 0]}
        fractions = [corner[i] / torch.tensor([s - 8 for s in shapes[i]], dtype=torch.float32) for i in (0, 1)]
        # the same fraction of each axis' free range, up to rounding each corner to a whole voxel
        rounding = sum(0.5 / torch.tensor([s - 8 for s in shape], dtype=torch.float32) for shape in shapes)
        assert torch.all((fractions[0] - fractions[1]).abs() <= rounding + 1e-6)
    bank = VolumeBank(coordinate_volumes([(20, 20, 20)] * 2))
    offsets = []
    for _ in range(40):
        a, b = bank.sample_pairs(2, (8, 8, 8), g, jitter=2)
        offsets.append((b[:, :3, 0, 0, 0] - a[:, :3, 0, 0, 0]).abs())
    offsets = torch.cat(offsets)
    assert offsets.max() <= 2 and offsets.max() > 0


def test_phantom_pairs_put_the_heart_where_the_other_subject_has_it():
    """On phantom-ct the hearts of x_A and x_B differ by the cohort's anatomical variation, not by a crop offset."""
    subjects = [generate_subject(seed, shape=(32, 32, 32), spacing=(10.0, 10.0, 10.0)) for seed in range(6)]
    # the heart mask and the subject's index ride along as further channels
    bank = VolumeBank(
        [
            np.stack([s.image_hu / 2048, (s.heart > 0).astype(np.float32), np.full(s.heart.shape, i)])
            for i, s in enumerate(subjects)
        ]
    )
    g = torch.Generator().manual_seed(0)

    def centroid(mask):
        return torch.stack(torch.where(mask > 0.5)).float().mean(1)

    anatomical = max(
        float((centroid(torch.as_tensor(a.heart)) - centroid(torch.as_tensor(b.heart))).abs().max())
        for a in subjects
        for b in subjects
    )
    distances = []
    for _ in range(80):
        a, b = bank.sample_pairs(1, (20, 20, 20), g)
        whole = [int((s.heart > 0).sum()) for s in (subjects[int(a[0, 2, 0, 0, 0])], subjects[int(b[0, 2, 0, 0, 0])])]
        if int(a[0, 1].sum()) == whole[0] and int(b[0, 1].sum()) == whole[1]:  # both crops hold the whole heart
            distances.append(float((centroid(a[0, 1]) - centroid(b[0, 1])).abs().max()))
    assert len(distances) >= 10
    assert max(distances) <= anatomical + 1.0  # within the cohort's variation (plus rounding each crop's corner)
    # hearts of different subjects lie 15 mm and more apart: pairs need registering, as real scans do
    assert anatomical >= 1.5


def test_two_process_gloo_ddp_run_writes_one_backbone(tmp_path):
    repo = Path(__file__).resolve().parents[1]
    script = tmp_path / "job.py"
    script.write_text(
        textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(repo)!r})
        import torch.distributed as dist
        from gvsl.pretrain import pretrain
        from tests.test_pretrain import config, volumes
        from gvsl.pretext import heldout_pairs
        from tests.test_pretrain import labelled_cases
        heldout = heldout_pairs(labelled_cases(), (16, 16, 16), pairs=2)
        pretrain(volumes(), {str(tmp_path / "run")!r}, config(iterations=2, batch_size=1, eval_every=1),
                 progress=False, heldout=heldout)
        # One file per rank: the two processes' stdout would interleave.
        open({str(tmp_path)!r} + f"/rank{{dist.get_rank()}}-of-{{dist.get_world_size()}}", "w").close()
    """)
    )
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone", str(script)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "rank0-of-2").exists() and (tmp_path / "rank1-of-2").exists()
    files = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert files == ["backbone.pt", "checkpoint.pt", "dvclive", "pretext.json"]
    assert len(load_file(tmp_path / "run" / "checkpoint.pt")["generators"]) == 2


def test_a_run_killed_while_dvclive_wrote_its_summary_resumes(tmp_path, interrupted_pretrain):
    """A kill during DVCLive's rewrite of metrics.json leaves it empty; resuming must not trip over it."""
    data = volumes()
    full = pretrain(data, tmp_path / "full", config(), progress=False)
    interrupted_pretrain(2, data, tmp_path / "cut", config(), progress=False)
    (tmp_path / "cut" / "dvclive" / "metrics.json").write_text("")
    (tmp_path / "cut" / "dvclive" / "params.yaml").write_text("pretrain: {method: gv")
    resumed = pretrain(data, tmp_path / "cut", config(), resume=True, progress=False)
    a, b = load_file(full.checkpoint)["model"], load_file(resumed.checkpoint)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "cut" / "dvclive" / "metrics.json").read_text())["step"] == 3
