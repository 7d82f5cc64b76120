"""The run directory readers: whole lines only, and the rollouts step index across rewrites."""

from rft.runs import RunWriter, read_metrics, read_rollouts, rollout_steps


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
