import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from gvsl.checkpoint import load_backbone, load_file
from gvsl.errors import GVSLInputError
from gvsl.pretrain import NonFiniteLossError, PretrainConfig, VolumeBank, pretrain

TINY = dict(channels=(8, 16, 16, 16, 16, 16, 16, 8, 8), affine_channels=16, local_head_channels=8)
# Small spatial ranges keep the tiny crops mostly inside the field of view.
QUICK_SPATIAL = dict(elastic_alpha=(0.0, 2.0), elastic_sigma=(2.0, 3.0))


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
    base = dict(variant="gvsl", iterations=4, batch_size=2, crop=(16, 16, 16), seed=3, checkpoint_every=2,
                device="cpu", spatial=QUICK_SPATIAL, **TINY)
    base.update(kw)
    return PretrainConfig(**base)


def test_resumed_run_ends_with_the_same_weights(tmp_path):
    data = volumes()
    full = pretrain(data, tmp_path / "full", config(), progress=False)
    pretrain(data, tmp_path / "cut", config(iterations=2), progress=False)
    resumed = pretrain(data, tmp_path / "cut", config(), resume=True, progress=False)
    a, b = load_file(full.checkpoint), load_file(resumed.checkpoint)
    assert a["iteration"] == b["iteration"] == 4
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    # The log holds each iteration once, and the loss terms of every variant component.
    log = pd.read_csv(tmp_path / "cut" / "dvclive" / "plots" / "metrics" / "train" / "total.tsv", sep="\t")
    assert log["step"].tolist() == [0, 1, 2, 3]
    for term in ("ncc", "smooth", "mse"):
        assert (tmp_path / "cut" / "dvclive" / "plots" / "metrics" / "train" / f"{term}.tsv").exists()


def test_outputs_backbone_with_config_and_provenance(tmp_path):
    result = pretrain(volumes(), tmp_path, config(variant="no_zmatch", iterations=2), progress=False,
                      provenance={"dataset": "unit-test"})
    backbone = load_backbone(result.backbone)
    assert backbone.channels == TINY["channels"]
    meta = load_file(result.backbone)["metadata"]
    assert meta["variant"] == "no_zmatch" and meta["dataset"] == "unit-test" and meta["iterations"] == 2
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
    with pytest.raises(GVSLInputError, match="variant: unknown 'simclr'"):
        PretrainConfig(variant="simclr")
    with pytest.raises(GVSLInputError, match="unknown settings \\['epochs'\\]"):
        PretrainConfig.from_dict({"epochs": 3})


def test_pairs_are_different_subjects():
    bank = VolumeBank([np.full((16, 16, 16), i, dtype=np.float32) for i in range(3)])
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        a, b = bank.sample_pairs(4, (8, 8, 8), g)
        assert (a[:, 0, 0, 0, 0] != b[:, 0, 0, 0, 0]).all()


def test_two_process_gloo_ddp_run_writes_one_backbone(tmp_path):
    repo = Path(__file__).resolve().parents[1]
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(repo)!r})
        import torch.distributed as dist
        from gvsl.pretrain import pretrain
        from tests.test_pretrain import config, volumes
        pretrain(volumes(), {str(tmp_path / "run")!r}, config(iterations=2, batch_size=1), progress=False)
        # One file per rank: the two processes' stdout would interleave.
        open({str(tmp_path)!r} + f"/rank{{dist.get_rank()}}-of-{{dist.get_world_size()}}", "w").close()
    """))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
                           str(script)], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "rank0-of-2").exists() and (tmp_path / "rank1-of-2").exists()
    files = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert files == ["backbone.pt", "checkpoint.pt", "dvclive"]
    assert len(load_file(tmp_path / "run" / "checkpoint.pt")["generators"]) == 2
