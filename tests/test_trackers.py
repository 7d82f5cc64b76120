"""Experiment trackers, for real: a tiny run mirrored to TensorBoard and trackio, read back with
each tracker's own reader; a tracker that cannot start is logged once and the run goes on."""

from __future__ import annotations

import json

import pytest

from rft.config import ConfigError
from rft.grpo.trainer import train
from rft.runs import read_metrics, read_status
from test_trainer_e2e import prompts_file, tiny_config  # noqa: F401


def test_a_run_mirrored_to_tensorboard_and_trackio(tmp_path, tiny_model_dir, prompts_file, monkeypatch):  # noqa: F811
    monkeypatch.setenv("TRACKIO_DIR", str(tmp_path / "trackio"))
    import trackio.utils

    monkeypatch.setattr(trackio.utils, "TRACKIO_DIR", tmp_path / "trackio", raising=False)
    config = tiny_config(tiny_model_dir, prompts_file, set=["report.to=[tensorboard, trackio]", "report.project=tiny",
                                                            "data.eval_size=4", "schedule.eval_every=3"])
    run_dir = train(config, tmp_path / "run", progress=False)
    assert read_status(run_dir)["state"] == "finished"
    metrics = read_metrics(run_dir)
    assert "report: mirroring the run to tensorboard, trackio" in (run_dir / "logs.txt").read_text()

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0}).Reload()
    rewards = [(event.step, event.value) for event in events.Scalars("reward")]
    assert rewards == [(step, pytest.approx(value, rel=1e-5)) for step, value in zip(metrics["step"], metrics["reward"])]
    assert [event.step for event in events.Scalars("eval/reward")] == [0, 3]  # held-out rows, as the run wrote them
    assert {"completions", "config"} <= {tag.split("/")[0] for tag in events.Tags()["tensors"]}

    from trackio import SQLiteStorage

    logs = SQLiteStorage.get_logs("tiny", run_dir.name)
    logged = {row["step"]: row["reward"] for row in logs if "reward" in row}
    assert logged == {step: pytest.approx(value) for step, value in zip(metrics["step"], metrics["reward"])}
    tables = [row["completions"] for row in logs if "completions" in row]
    assert len(tables) == 3 and len(tables[0]["_value"]) == 4  # one prompt x four completions a step


def test_a_run_mirrored_to_wandb_offline_and_to_an_mlflow_file_store(tmp_path, tiny_model_dir, prompts_file,  # noqa: F811
                                                                     monkeypatch):
    for name in ("WANDB_MODE", "WANDB_API_KEY", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: W&B is not set up, so it writes offline
    config = tiny_config(tiny_model_dir, prompts_file, set=["report.to=[wandb, mlflow]", "report.project=tiny"])
    run_dir = train(config, tmp_path / "run", progress=False)
    metrics = read_metrics(run_dir)
    assert "report: mirroring the run to wandb, mlflow" in (run_dir / "logs.txt").read_text()

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=(run_dir / "mlruns").as_uri())
    [run] = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    history = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "reward")]
    assert history == [(step, pytest.approx(value)) for step, value in zip(metrics["step"], metrics["reward"])]
    assert run.data.params["grpo.loss_type"] == config.grpo.loss_type and run.info.status == "FINISHED"
    assert [a.path for a in client.list_artifacts(run.info.run_id, "completions")] == [
        f"completions/step-{step}.json" for step in (1, 2, 3)]

    # W&B's offline run: its completions tables as JSON files, its history in the run's .wandb log.
    [offline] = list((run_dir / "wandb").glob("offline-run-*"))
    tables = sorted((offline / "files" / "media" / "table").glob("completions_*.table.json"))
    table = json.loads(tables[0].read_text())
    assert len(tables) == 3 and "completion" in table["columns"] and len(table["data"]) == 4
    history_log = next(offline.glob("run-*.wandb")).read_bytes()
    assert b"rewards/shorter_is_better/mean" in history_log and b"frac_reward_zero_std" in history_log


def test_an_unknown_tracker_is_refused_and_a_failing_one_is_switched_off(tmp_path, tiny_model_dir, prompts_file,  # noqa: F811
                                                                       monkeypatch):
    with pytest.raises(ConfigError, match="report.to: neptune is not a tracker"):
        tiny_config(tiny_model_dir, prompts_file, set=["report.to=[neptune]"]).validate()

    from rft import trackers

    def broken(*args):
        raise OSError("No space left on device")

    monkeypatch.setattr(trackers.TensorBoardTracker, "log_metrics", broken)
    run_dir = train(tiny_config(tiny_model_dir, prompts_file, set=["report.to=[tensorboard]"]), tmp_path / "run",
                    progress=False)
    assert read_status(run_dir)["state"] == "finished" and len(read_metrics(run_dir)) == 3
    logs = (run_dir / "logs.txt").read_text()
    assert logs.count("report: tensorboard failed and is off for the rest of the run (OSError") == 1
