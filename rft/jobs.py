"""Training jobs: start, stop, resume and find `python -m rft train` subprocesses.

A job is a run directory plus the trainer process whose pid is in its status.json. The process
is started in its own session, so closing or restarting the dashboard never stops it, and a
restarted dashboard finds it again from the run directories.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

from rft.config import ConfigError, RunConfig
from rft.runs import (
    ACTIVE_STATES,
    RunSummary,
    RunWriter,
    default_runs_root,
    effective_state,
    extend_run,
    list_runs,
    new_run_id,
    read_config,
    read_status,
    run_dir_for,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DASHBOARD_THREADS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class JobError(RuntimeError):
    """A job that cannot be started or controlled; the message says why and what to do."""


def preflight(config: RunConfig) -> list[str]:
    """Everything that can be checked in a second before launching: fields, files, reward code."""
    from rft import data, models, rewards

    problems = config.problems()
    if config.data.path:
        try:
            rows = data.read_dataset(config.data)
        except data.DatasetError as exc:
            problems.append(f"data.path: {exc}")
        else:
            problems.extend(_sft_problems(config, rows))
            columns = {key for row in rows for key in data.example_of(row, config.data)}
            problems.extend(f"rewards.source: {message}"
                            for message in rewards.missing_example_keys(config.rewards.source, columns))
    elif config.data.preset and not data.is_known_preset(config.data.preset):
        problems.append(f"data.preset: unknown preset {config.data.preset!r}")
    else:
        problems.extend(_sft_problems(config, []))
    reference = config.model.name_or_path.strip()
    if reference and reference != models.BUNDLED_MODEL:
        path = Path(reference).expanduser()
        if models.looks_like_hub_repo_id(reference):
            try:
                models.require_in_hf_cache(reference)
            except models.ModelLoadError as exc:
                problems.append(f"model.name_or_path: {exc}")
        elif not path.exists():
            problems.append(f"model.name_or_path: {reference} does not exist")
        elif path.is_dir() and not (path / "config.json").exists():
            problems.append(f"model.name_or_path: {reference} is not a model directory (no config.json)")
        elif path.is_dir() and not any(path.glob("*.safetensors")):
            problems.append(f"model.name_or_path: {reference} has no .safetensors weights; only safetensors are "
                            "loaded (pickled .bin weights can run code)")
    if config.model.adapter:
        try:
            models.checked_adapter_dir(config.model.adapter)
        except models.ModelLoadError as exc:
            problems.append(f"model.adapter: {exc}")
    if config.rewards.source.strip():
        check = rewards.check(config.rewards.source)
        problems.extend(f"rewards.source: {error}" for error in check.errors)
        unknown = sorted(set(config.rewards.weights) - {f.name for f in check.functions})
        if check.ok and unknown:
            problems.append(f"rewards.weights: no reward function named {', '.join(unknown)}")
    return problems


def _sft_problems(config: RunConfig, rows: list[dict]) -> list[str]:
    """An SFT warm start needs a demonstration for every row: refuse at launch, not minutes later."""
    from rft import data, sft

    if not config.sft.enabled:
        return []
    try:
        sft.demonstration_source(config.data, rows)
    except data.DatasetError as exc:
        return [str(exc)]
    return []


def active_jobs(runs_root: str | Path | None = None) -> list[RunSummary]:
    return [run for run in list_runs(runs_root) if run.state in ACTIVE_STATES]


@contextmanager
def threads_beside_jobs(runs_root: str | Path | None = None):
    """The dashboard's own inference (Compare, Play, Evaluate) inside this block runs on one thread
    while a training job runs, and on every core otherwise. Two torch processes that each take
    every core of a small machine slow each other down by orders of magnitude (a 12-token step took
    200 s instead of seconds on 2 cores), and the job is what the user is waiting for."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1 if active_jobs(runs_root) else DASHBOARD_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextmanager
def _launch_lock(runs_root: Path):
    """Serialises check-then-start, so two dashboards launching at once cannot both start a job."""
    runs_root.mkdir(parents=True, exist_ok=True)
    with open(runs_root / ".launch.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _spawn_trainer(run_dir: Path, resume: bool) -> int:
    command = [sys.executable, "-m", "rft", "resume" if resume else "train", "--no-progress"]
    command += [str(run_dir)] if resume else ["--config", str(run_dir / "config.yaml"), "--run-dir", str(run_dir)]
    log = open(run_dir / "logs.txt", "a", encoding="utf-8")
    # logs.txt is read by people: no progress bars redrawn line by line, no libraries' deprecation notices.
    env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_DISABLE_PROGRESS_BARS="1",
               PYTHONWARNINGS="ignore::FutureWarning,ignore::DeprecationWarning")
    process = subprocess.Popen(
        command, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True, env=env,
    )
    log.close()
    return process.pid


def _refuse_if_busy(runs_root: Path) -> None:
    busy = active_jobs(runs_root)
    if busy:
        run = busy[0]
        raise JobError(
            f"run {run.run_id} is already {run.state} (step {run.step} of {run.max_steps}). One training job runs "
            "at a time on this machine: stop it first, or wait for it to finish."
        )


def start_job(config: RunConfig, runs_root: str | Path | None = None) -> Path:
    """Validate, create the run directory and start the trainer; returns the run directory."""
    problems = preflight(config)
    if problems:
        raise ConfigError(problems)
    root = Path(runs_root) if runs_root else default_runs_root()
    with _launch_lock(root):
        _refuse_if_busy(root)
        run_dir = run_dir_for(root, new_run_id(config.name))
        writer = RunWriter(run_dir)
        writer.create(config)
        writer.record_pid(_spawn_trainer(run_dir, resume=False))
    return run_dir


def resume_job(run_dir: str | Path, max_steps: int | None = None) -> Path:
    """Train a run on from its last checkpoint; with `max_steps`, to that step (runs.extend_run)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").exists():
        raise JobError(f"{run_dir} is not a run directory (no config.yaml)")
    state = effective_state(read_status(run_dir))
    if state == "finished" and max_steps is None:
        raise JobError(f"run {run_dir.name} has finished its {read_config(run_dir).schedule.max_steps} steps; "
                       f"to train it further, set more max steps and resume it")
    with _launch_lock(run_dir.parent):
        _refuse_if_busy(run_dir.parent)
        if max_steps is not None:
            try:
                extend_run(run_dir, max_steps)
            except ValueError as exc:
                raise JobError(str(exc)) from exc
        read_config(run_dir).validate()
        writer = RunWriter(run_dir)
        writer.set_status("queued", pid=None, error=None)
        writer.record_pid(_spawn_trainer(run_dir, resume=True))
    return run_dir


def stop_job(run_dir: str | Path) -> None:
    """Ask the trainer to finish its current step, checkpoint and stop."""
    run_dir = Path(run_dir)
    status = read_status(run_dir)
    if effective_state(status) not in ACTIVE_STATES:
        raise JobError(f"run {run_dir.name} is not running (state: {effective_state(status)})")
    writer = RunWriter(run_dir)
    writer.request_stop()
    writer.set_status("stopping")


def kill_job(run_dir: str | Path) -> None:
    """Stop at once (SIGKILL); the run can be resumed from its last checkpoint."""
    run_dir = Path(run_dir)
    status = read_status(run_dir)
    pid = status.get("pid")
    if pid and effective_state(status) in ACTIVE_STATES:
        try:
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
    RunWriter(run_dir).set_status("stopped", error="killed by the user")
