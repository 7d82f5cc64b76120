"""The run directory readers: whole lines only, the rollouts step index across rewrites, and a run
deleted while it is read."""

import shutil
import threading
import time

import pytest

from rft.config import RewardsConfig, RunConfig, ScheduleConfig
from rft.runs import (
    RunWriter,
    extend_run,
    list_checkpoints,
    read_metrics,
    read_rollouts,
    read_config,
    read_sft_metrics,
    read_status,
    rollout_steps,
    tail_logs,
)


def test_rollouts_index_follows_appends_half_lines_and_resume_rewrites(tmp_path):
    writer = RunWriter(tmp_path)
    for step in (1, 2, 3):
        writer.append_rollouts(step, [{"prompt": f"p{step}"}])
    assert rollout_steps(tmp_path) == [1, 2, 3]
    assert read_rollouts(tmp_path)["step"] == 3
    assert read_rollouts(tmp_path, 2)["groups"][0]["prompt"] == "p2"

    with open(tmp_path / "rollouts.jsonl", "a") as f:
        f.write('{"step": 4, "gro')  # a line still being written
    assert rollout_steps(tmp_path) == [1, 2, 3]
    assert read_rollouts(tmp_path, 4) is None

    writer.truncate_after(2)  # what a resume from step 2 does
    assert rollout_steps(tmp_path) == [1, 2]
    assert read_rollouts(tmp_path, 3) is None
    writer.append_rollouts(3, [{"prompt": "again"}])
    assert read_rollouts(tmp_path, 3)["groups"][0]["prompt"] == "again"


def test_metrics_reader_skips_a_half_written_last_line(tmp_path):
    writer = RunWriter(tmp_path)
    writer.append_metrics({"step": 1, "reward": 0.5})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 2, "rew')
    assert read_metrics(tmp_path)["step"].tolist() == [1]


def test_no_rollouts_yet(tmp_path):
    assert read_rollouts(tmp_path) is None
    assert rollout_steps(tmp_path) == []


def test_readers_never_raise_while_the_run_directory_is_being_deleted(tmp_path):
    """The dashboard polls a run while a user may delete it, so a file can vanish between two system
    calls of one read: every reader must then answer "nothing there", never raise."""
    run_dir = tmp_path / "run"
    stop = threading.Event()

    def create_and_delete_repeatedly():
        while not stop.is_set():
            writer = RunWriter(run_dir)
            (writer.checkpoints_dir / "step-1").mkdir(parents=True, exist_ok=True)
            writer.append_metrics({"step": 1})
            writer.append_sft_metrics({"step": 1})
            writer.append_rollouts(1, [])
            writer.log("a line")
            shutil.rmtree(run_dir, ignore_errors=True)

    churn = threading.Thread(target=create_and_delete_repeatedly)
    churn.start()
    failures = []
    try:
        deadline = time.time() + 1.5
        while time.time() < deadline:
            for reader in (read_metrics, read_sft_metrics, read_rollouts, rollout_steps, tail_logs, list_checkpoints):
                try:
                    reader(run_dir)
                except OSError as exc:
                    failures.append(f"{reader.__name__}: {exc!r}")
    finally:
        stop.set()
        churn.join()
    assert not failures, failures[:5]


def ended_run(tmp_path, state: str, checkpoint: int, **optim) -> RunWriter:
    """A run directory as a trainer leaves it: its config, its status and its checkpoints."""
    config = RunConfig(name="ended", schedule=ScheduleConfig(max_steps=10, save_every=5),
                       rewards=RewardsConfig(source="def short(prompt, completion, example):\n    return 0.0\n"))
    for key, value in optim.items():
        setattr(config.optim, key, value)
    writer = RunWriter(tmp_path / state)
    writer.create(config)
    writer.set_status(state, step=checkpoint, max_steps=10)
    (writer.checkpoints_dir / f"step-{checkpoint}").mkdir()
    return writer


def test_an_ended_run_is_extended_to_more_steps_ready_to_resume(tmp_path):
    writer = ended_run(tmp_path, "finished", 10)
    extend_run(writer.run_dir, 25)
    assert read_config(writer.run_dir).schedule.max_steps == 25
    assert read_status(writer.run_dir)["state"] == "stopped" and read_status(writer.run_dir)["max_steps"] == 25
    assert "length changed from 10 to 25 steps" in (writer.run_dir / "logs.txt").read_text()
    assert not list(writer.run_dir.glob("*.tmp"))


@pytest.mark.parametrize("state, checkpoint, max_steps, optim, reason", [
    ("running", 5, 20, {}, "is running: stop it"),
    ("stopped", 5, 5, {}, "checkpoint at step 5 already"),
    ("finished", 10, 20, {"lr_scheduler": "cosine"}, "decays its learning rate"),
])
def test_a_run_that_cannot_be_extended_is_left_as_it_was(tmp_path, state, checkpoint, max_steps, optim, reason,
                                                          monkeypatch):
    monkeypatch.setattr("rft.runs.pid_alive", lambda pid: True)
    writer = ended_run(tmp_path, state, checkpoint, **optim)
    writer.set_status(state, pid=1)
    before = (writer.run_dir / "config.yaml").read_text()
    with pytest.raises(ValueError, match=reason):
        extend_run(writer.run_dir, max_steps)
    assert (writer.run_dir / "config.yaml").read_text() == before
    assert read_status(writer.run_dir)["state"] == state
