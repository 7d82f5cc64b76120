"""The run directory readers: whole lines only, the rollouts step index across rewrites, and a run
deleted while it is read."""

import shutil
import threading
import time

from rft.runs import (
    RunWriter,
    list_checkpoints,
    read_metrics,
    read_rollouts,
    read_sft_metrics,
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
