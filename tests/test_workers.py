"""A stage's jobs side by side: one worker per device, one thread per CPU job, so results do not depend on
how many workers there are or which one ran a job."""

import os
import time

import pytest
import torch

from gvsl.errors import GVSLInputError
from gvsl.pipeline import compose
from gvsl.pipeline.config import Workers
from gvsl.pipeline.devices import stage_devices
from gvsl.pipeline.workers import available_cores, on_devices, run_jobs


def training_step(seed: int, device: str) -> tuple[int, str, int, bytes]:
    """A few steps of a small 3-D convolutional network on ``device`` (the reductions whose order threads
    change), and which worker process ran it."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Conv3d(1, 16, 3, padding=1),
        torch.nn.GroupNorm(2, 16),
        torch.nn.LeakyReLU(),
        torch.nn.Conv3d(16, 2, 3, padding=1),
    ).to(device)
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-2)
    volume = torch.randn(2, 1, 24, 24, 24).to(device)
    for _ in range(3):
        optimiser.zero_grad()
        net(volume).square().mean().backward()
        optimiser.step()
    time.sleep(0.2)  # long enough that every worker gets a job
    return (
        torch.get_num_threads(),
        device,
        os.getpid(),
        b"".join(p.detach().cpu().numpy().tobytes() for p in net.parameters()),
    )


def test_jobs_spread_over_every_device_stand_in_and_give_the_bits_of_one_device():
    seeds = list(range(6))
    alone = on_devices(training_step, seeds, ["cpu"])
    spread = on_devices(training_step, seeds, ["cpu"] * 3)  # three stand-ins of three devices
    assert len({pid for _, _, pid, _ in alone}) == 1 and alone[0][2] == os.getpid()
    assert len({pid for _, _, pid, _ in spread}) == 3  # one worker per device, and every one ran jobs
    assert [threads for threads, *_ in alone] == [threads for threads, *_ in spread] == [1] * 6
    assert {device for _, device, _, _ in spread} == {"cpu"}
    assert [bits for *_, bits in alone] == [bits for *_, bits in spread]
    assert len({bits for *_, bits in alone}) == 6  # the seeds differ, so the test could tell runs apart


def test_run_jobs_reads_the_stage_devices_and_the_executor():
    settings = compose({"pretrain": {"processes": 1, "devices": ["cpu", "cpu"]}, "executor": {"kind": "local"}})
    results = run_jobs(training_step, [0, 1], settings, "pretrain")
    assert len({pid for _, _, pid, _ in results}) == 2 and os.getpid() not in {pid for _, _, pid, _ in results}


def test_devices_auto_is_every_gpu_or_one_cpu_worker_per_process():
    expected = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else ["cpu"] * 2
    assert stage_devices(Workers(processes=2, devices="auto"), "pretrain") == expected
    assert stage_devices(Workers(processes=1, devices=["cpu", "cpu", "cpu"]), "transfer") == ["cpu"] * 3


@pytest.mark.parametrize("devices", [[], ["tpu"], ["cuda:99"], ["cpu:1"]])
def test_bad_devices_name_the_key_and_the_valid_values(devices):
    with pytest.raises(GVSLInputError, match=r"params.yaml: transfer.devices.*auto, or a list of cpu") as raised:
        stage_devices(Workers(processes=1, devices=devices), "transfer")
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("devices", ["gpu", [0]])
def test_devices_that_are_not_names_are_refused_when_the_settings_are_read(devices):
    with pytest.raises(GVSLInputError, match=r"params.yaml: transfer.devices must be") as raised:
        compose({"transfer": {"devices": devices}})
    assert "\n" not in str(raised.value)


def test_processes_auto_is_one_per_available_core(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert stage_devices(Workers(processes="auto"), "pretrain") == ["cpu"] * available_cores()
    with pytest.raises(GVSLInputError, match="pretrain.processes must be an integer >= 1 or 'auto', got 'all'"):
        compose({"pretrain": {"processes": "all"}})


def test_a_gpu_worker_is_pinned_to_the_gpu_its_index_names_in_the_inherited_visible_list(monkeypatch):
    from gvsl.pipeline.workers import visible_gpu

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert visible_gpu("cuda:1") == "1"
    # a node or scheduler that lends GPUs 4 and 5: cuda:1 of this process is physical GPU 5
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4, 5")
    assert (visible_gpu("cuda:0"), visible_gpu("cuda:1")) == ("4", "5")
