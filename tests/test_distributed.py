"""Data-parallel training (rft.distributed): two CPU processes over gloo.

`accelerate launch` starts GPU processes with torchrun; with --cpu it starts one process (several
need MPI), so the end-to-end test starts its two CPU processes with torchrun directly.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from rft.config import DataConfig, ModelConfig, OptimConfig, RewardsConfig, RunConfig, SamplingConfig, ScheduleConfig
from rft.config import SFTConfig
from rft.distributed import Processes, join_launched_processes
from rft.grpo.trainer import step_reward_moments
from rft.runs import list_checkpoints, read_metrics, read_rollouts, read_sft_metrics, read_status

PROJECT_ROOT = Path(__file__).resolve().parents[1]
LENGTH_REWARD = "def shorter_is_better(prompt, completion, example):\n    return -len(completion) / 20\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _collectives(rank: int, port: int, results) -> None:
    """One of two processes: join as a launcher would leave the environment, then use each collective."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE="2", LOCAL_WORLD_SIZE="2", OMP_NUM_THREADS="1")
    processes = join_launched_processes("cpu")
    weight = torch.nn.Parameter(torch.zeros(3))
    weight.grad = torch.tensor([1.0, 2.0, 3.0]) * (rank + 1)
    unused = torch.nn.Parameter(torch.zeros(2))  # no gradient in rank 1
    unused.grad = torch.ones(2) if rank == 0 else None
    processes.sum_gradients([weight, unused])
    fresh = torch.nn.Parameter(torch.full((2,), float(rank)))
    processes.copy_from_main([fresh])
    # Rank 0's micro-batches hold 1, 2 and an unscorable completion; rank 1's hold 3 and 4.
    micro_batches = [[torch.tensor([1.0, float("nan")]), torch.tensor([2.0])], [torch.tensor([3.0, 4.0])]][rank]
    results[rank] = {
        "rank": processes.rank, "world_size": processes.world_size, "device": processes.device,
        "grad": weight.grad.tolist(), "unused_grad": unused.grad.tolist(), "copied": fresh.detach().tolist(),
        "sum": processes.sum(rank + 0.5),
        "step_reward_moments": step_reward_moments(micro_batches, processes),
        "from_main": processes.from_main(f"named by {rank}"),
        "gathered": processes.gather_at_main({"rank": rank}),
    }
    processes.wait_for_all()


def test_collectives_sum_copy_and_gather_across_two_processes():
    results = mp.Manager().dict()
    mp.spawn(_collectives, args=(free_port(), results), nprocs=2, join=True)
    main, follower = results[0], results[1]
    assert (main["rank"], follower["rank"], main["world_size"]) == (0, 1, 2)
    assert main["device"] == follower["device"] == "cpu"
    for result in (main, follower):
        assert result["grad"] == [3.0, 6.0, 9.0]  # 1x + 2x the same gradient
        assert result["unused_grad"] == [1.0, 1.0]
        assert result["copied"] == [0.0, 0.0]
        assert result["sum"] == 2.0
        assert result["step_reward_moments"] == pytest.approx((2.5, torch.tensor([1.0, 2.0, 3.0, 4.0]).std().item()))
        assert result["from_main"] == "named by 0"
    assert main["gathered"] == [{"rank": 0}, {"rank": 1}]
    assert follower["gathered"] is None


def test_one_process_needs_no_launcher():
    processes = Processes()
    weight = torch.nn.Parameter(torch.zeros(2))
    weight.grad = torch.ones(2)
    processes.sum_gradients([weight])
    assert weight.grad.tolist() == [1.0, 1.0]
    assert processes.sum(2.5) == 2.5 and processes.from_main("x") == "x" and processes.gather_at_main(7) == [7]
    assert processes.is_main and not processes.launched


def two_process_config(model_dir: Path, data_file: Path) -> RunConfig:
    return RunConfig(
        name="parallel",
        model=ModelConfig(name_or_path=str(model_dir), device="cpu"),
        data=DataConfig(preset=None, path=str(data_file), shuffle=False),
        rewards=RewardsConfig(source=LENGTH_REWARD, timeout_s=5.0),
        sampling=SamplingConfig(num_generations=2, max_completion_length=6, top_k=10),
        optim=OptimConfig(learning_rate=1e-2, prompts_per_step=1),
        schedule=ScheduleConfig(max_steps=2, save_every=1),
        sft=SFTConfig(enabled=True, examples=4, batch_size=4, epochs=1.0, max_length=64),
    )


@pytest.mark.slow
def test_torchrun_trains_on_two_cpu_processes(tmp_path, tiny_model_dir):
    data_file = tmp_path / "prompts.jsonl"
    data_file.write_text("".join(json.dumps({"prompt": f"Count to {i}.", "completion": " 1 2"}) + "\n" for i in range(8)))
    config_file = tmp_path / "config.yaml"
    two_process_config(tiny_model_dir, data_file).save(config_file)
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(free_port()),
               "-m", "rft", "train", "--config", str(config_file), "--run-dir", str(run_dir), "--no-progress"]
    environment = dict(os.environ, OMP_NUM_THREADS="1")
    finished = subprocess.run(command, cwd=PROJECT_ROOT, env=environment, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    assert finished.stdout.count("run directory:") == 1 and "(2 processes)" in finished.stdout

    assert read_status(run_dir)["state"] == "finished"
    metrics = read_metrics(run_dir)
    assert metrics["step"].tolist() == [1, 2]
    # Each step holds one group from each process: two different prompts, in dataset order.
    assert all(len(groups) == 2 and all(len(g) == 2 for g in groups) for groups in metrics["group_rewards"])
    assert [group["prompt"] for group in read_rollouts(run_dir, step=1)["groups"]] == ["Count to 0.", "Count to 1."]
    assert [group["prompt"] for group in read_rollouts(run_dir, step=2)["groups"]] == ["Count to 2.", "Count to 3."]
    assert metrics.loc[2, "epoch"] == pytest.approx(4 / 8)  # four of the eight prompts seen
    assert list_checkpoints(run_dir) == [1, 2]
    # The warm start ran once over both processes: one batch of four demonstrations.
    sft_rows = read_sft_metrics(run_dir)
    assert sft_rows["step"].tolist() == [1] and sft_rows.loc[1, "tokens"] > 0
    logs = (run_dir / "logs.txt").read_text()
    assert logs.count("sft: warm start saved") == 1 and "checkpoint saved: step-2" in logs
