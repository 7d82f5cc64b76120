"""Fault suite, jobs: what the dashboard relies on when two launches race, a dashboard restarts, or
a run directory disappears while it is shown. (The browser-level versions need the dashboard.)"""

from __future__ import annotations

import json
import shutil
import threading

from fault_log import record_fault

from rft import jobs
from rft.config import DataConfig, ModelConfig, RewardsConfig, RunConfig, SamplingConfig, ScheduleConfig
from rft.runs import (
    RunWriter,
    effective_state,
    list_checkpoints,
    list_runs,
    read_metrics,
    read_rollouts,
    read_status,
    summarize_run,
    tail_logs,
)


def test_two_launches_at_once_start_one_job_and_tell_the_other_why(tmp_path, tiny_model_dir):
    dataset = tmp_path / "prompts.jsonl"
    dataset.write_text(json.dumps({"prompt": "Say hi."}) + "\n")
    config = RunConfig(
        name="race",
        model=ModelConfig(name_or_path=str(tiny_model_dir)),
        data=DataConfig(preset=None, path=str(dataset)),
        rewards=RewardsConfig(source="def r(prompt, completion, example):\n    return 0.0\n"),
        sampling=SamplingConfig(num_generations=2, max_completion_length=4),
        schedule=ScheduleConfig(max_steps=1000, save_every=0),
    )
    runs_root = tmp_path / "runs"
    start_together = threading.Barrier(2)
    started, refused = [], []

    def launch() -> None:
        start_together.wait()
        try:
            started.append(jobs.start_job(config, runs_root))
        except jobs.JobError as exc:
            refused.append(str(exc))

    threads = [threading.Thread(target=launch) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        one_ran = len(started) == 1 and len(refused) == 1 and "One training job runs at a time" in refused[0]
        # A restarted dashboard knows the job only from the run directories: it must find it there.
        found_after_restart = [run.run_dir for run in jobs.active_jobs(runs_root)] == started
        record_fault("two launches at once", 1, int(one_ran and found_after_restart), 0)
        assert one_ran, (started, refused)
        assert found_after_restart
    finally:
        for run_dir in started:
            jobs.kill_job(run_dir)
    assert len([p for p in runs_root.iterdir() if p.is_dir()]) == 1


def test_every_reader_copes_with_a_run_directory_deleted_while_shown(tmp_path):
    run_dir = tmp_path / "runs" / "20250101-000000-gone"
    writer = RunWriter(run_dir)
    writer.create(RunConfig())
    writer.append_metrics({"step": 1, "reward": 0.5})
    writer.append_rollouts(1, [])
    writer.log("step one")
    shutil.rmtree(run_dir)

    readers = {
        "status": lambda: read_status(run_dir) == {},
        "state": lambda: effective_state(read_status(run_dir)) == "unknown",
        "metrics": lambda: read_metrics(run_dir).empty,
        "rollouts": lambda: read_rollouts(run_dir) is None,
        "logs": lambda: tail_logs(run_dir) == "",
        "checkpoints": lambda: list_checkpoints(run_dir) == [],
        "summary": lambda: summarize_run(run_dir).model == "?",
        "run list": lambda: list_runs(run_dir.parent) == [],
    }
    coped = {name: reader() for name, reader in readers.items()}
    record_fault("run directory deleted while shown", len(readers), sum(coped.values()), 0)
    assert all(coped.values()), coped

