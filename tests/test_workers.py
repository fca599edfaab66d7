"""A stage's jobs side by side: one thread per CPU job, so results do not depend on the process count."""

import pytest
import torch

from gvsl.errors import GVSLInputError
from gvsl.pipeline.layout import process_count
from gvsl.pipeline.workers import available_cores, in_processes


def training_step(seed: int) -> tuple[int, bytes]:
    """A few steps of a small 3-D convolutional network: the reductions whose order threads change."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 16, 3, padding=1), torch.nn.GroupNorm(2, 16), torch.nn.LeakyReLU(),
                              torch.nn.Conv3d(16, 2, 3, padding=1))
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-2)
    volume = torch.randn(2, 1, 24, 24, 24)
    for _ in range(3):
        optimiser.zero_grad()
        net(volume).square().mean().backward()
        optimiser.step()
    return torch.get_num_threads(), b"".join(p.detach().numpy().tobytes() for p in net.parameters())


def test_cpu_jobs_run_at_one_thread_and_give_the_same_bits_in_one_process_or_several():
    seeds = [0, 1, 2]
    alone = in_processes(training_step, seeds, processes=1)
    side_by_side = in_processes(training_step, seeds, processes=2)
    assert [threads for threads, _ in alone] == [threads for threads, _ in side_by_side] == [1, 1, 1]
    assert [bits for _, bits in alone] == [bits for _, bits in side_by_side]
    assert len({bits for _, bits in alone}) == 3  # the seeds differ, so the test could tell runs apart


def test_processes_auto_is_one_per_available_core():
    assert process_count({"pretrain": {"processes": "auto"}}, "pretrain") == available_cores() >= 1
    with pytest.raises(GVSLInputError, match="pretrain.processes must be an integer >= 1 or 'auto'"):
        process_count({"pretrain": {"processes": "all"}}, "pretrain")
