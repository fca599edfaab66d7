"""Each pre-training seed's transfer runs have transfer seeds of their own
(gvsl.pipeline.stage_transfer.transfer_seed)."""

import itertools

from gvsl.pipeline.stage_transfer import transfer_seed


def test_default_gives_pretraining_seed_p_transfer_seed_p():
    assert [transfer_seed(p, 0, [0]) for p in range(5)] == [0, 1, 2, 3, 4]


def test_every_run_of_a_cell_has_its_own_transfer_seed():
    for listed in ([0], [0, 1, 2], [3, 7], [1]):
        seeds = [transfer_seed(p, t, listed) for p, t in itertools.product(range(6), listed)]
        assert len(set(seeds)) == len(seeds)
    # the paper's three transfer seeds of pre-training seed 0 stay 0, 1, 2
    assert [transfer_seed(0, t, [0, 1, 2]) for t in (0, 1, 2)] == [0, 1, 2]


def test_every_fraction_runs_every_seed_and_the_full_one_is_table_1s_cell():
    from pathlib import Path

    from gvsl.pipeline import compose
    from gvsl.pipeline.stage_transfer import TransferJob
    from gvsl.transfer import TransferConfig

    settings = compose(
        {"transfer": {"linear": {"fractions": [0.25, 1.0], "seeds": [0]}}, "pretrain": {"seeds": [0, 1]}}
    )
    assert settings.transfer.linear.fractions == (0.25, 1.0)
    config = TransferConfig("segmentation", "linear", 2, label_fraction=0.25)
    job = TransferJob("SHC", "linear", "gvsl", 0, 0, config, Path("build"))
    assert str(job.out) == "build/transfer/gvsl/SHC-linear-labels0.25/p0-t0"
    full = TransferJob("SHC", "linear", "gvsl", 0, 0, TransferConfig("segmentation", "linear", 2), Path("build"))
    assert str(full.out) == "build/transfer/gvsl/SHC-linear/p0-t0"
