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
