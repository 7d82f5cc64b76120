"""The dashboard's own inference takes one thread while a training job runs, every core otherwise."""

import os

import torch

from rft import jobs
from rft.config import RunConfig
from rft.runs import RunWriter


def test_inference_takes_one_thread_while_a_job_runs(tmp_path):
    before = torch.get_num_threads()
    with jobs.threads_beside_jobs(tmp_path):
        assert torch.get_num_threads() == jobs.DASHBOARD_THREADS
    assert torch.get_num_threads() == before

    writer = RunWriter(tmp_path / "running-job")
    writer.create(RunConfig(name="job"))
    writer.set_status("running", pid=os.getpid())  # a live process, started before this status was written
    with jobs.threads_beside_jobs(tmp_path):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before

    writer.set_status("finished")
    with jobs.threads_beside_jobs(tmp_path):
        assert torch.get_num_threads() == jobs.DASHBOARD_THREADS
