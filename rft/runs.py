"""The run directory: the one contract between the trainer, the dashboard and the CLI.

runs/<run-id>/
    config.yaml        the exact RunConfig, reward code included
    status.json        {"state", "pid", "step", "max_steps", "error", "started_at", "updated_at", ...}
    metrics.jsonl      one JSON object per optimisation step
    rollouts.jsonl     one JSON object per step: {"step": N, "groups": [...]}
    logs.txt           trainer output and reward-function prints, tagged with the step
    checkpoints/step-<N>/   PEFT adapter + trainer state, written to a temp dir and renamed
    sft_metrics.jsonl  with an SFT warm start: one JSON object per supervised step
    eval_metrics.jsonl with schedule.eval_every: one JSON object per evaluation on the held-out rows
    checkpoints/sft/   with an SFT warm start: the adapter GRPO starts from (and its KL reference)
    stop               present when a graceful stop was requested

`RunWriter` is the trainer side; the module-level readers are the UI / CLI side. Every write is
either an append of whole lines, flushed, or an atomic replace, so a crash of either side leaves
files the other can read.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from rft.config import RunConfig
from rft.rewards import versions as reward_versions

STATES = ("queued", "running", "stopping", "stopped", "finished", "failed")
ACTIVE_STATES = ("queued", "running", "stopping")
SFT_ADAPTER_DIR = "sft"
SFT_METRICS_FILE = "sft_metrics.jsonl"
EVAL_METRICS_FILE = "eval_metrics.jsonl"
CHECKPOINT_PATTERN = re.compile(r"^step-(\d+)$")
RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
PID_CLOCK_SLACK_S = 2.0  # /proc's boot time has 1 s resolution


def default_runs_root() -> Path:
    return Path(os.environ.get("RFT_RUNS_DIR", "runs")).resolve()


def new_run_id(name: str) -> str:
    """A readable, unique, filesystem-safe id: the run name slugged plus a timestamp."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name.strip()).strip("-.")[:60] or "run"
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{slug}"


def run_dir_for(runs_root: str | Path, run_id: str) -> Path:
    """The directory of `run_id` under `runs_root`; refuses ids that would escape it."""
    return folder_inside(runs_root, run_id, "run id")


def folder_inside(root: str | Path, name: str, what: str) -> Path:
    """`root/name` for a name typed or sent by a user; refuses any name that would lead outside
    `root` (separators, '..', absolute paths, a symlink pointing elsewhere)."""
    if not isinstance(name, str) or not RUN_ID_PATTERN.fullmatch(name):
        raise ValueError(f"{name!r} is not a valid {what} (letters, digits, '.', '_', '-'; no '/')")
    root = Path(root).resolve()
    path = (root / name).resolve()
    if path.parent != root:
        raise ValueError(f"{what} {name!r} leads outside {root}")
    return path


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    os.replace(tmp, path)


def _json_safe(value):
    """NaN and inf are not JSON; they become null so every reader can parse every line."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


class RunWriter:
    """Trainer-side writer. Only one process (rank 0) writes a run directory."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.checkpoints_dir = self.run_dir / "checkpoints"

    def create(self, config: RunConfig) -> None:
        self.checkpoints_dir.mkdir(parents=True, exist_ok=True)
        config.save(self.run_dir / "config.yaml")
        if not (self.run_dir / "status.json").exists():
            self.set_status("queued", step=0, max_steps=config.schedule.max_steps)

    def set_status(self, state: str, **fields) -> dict:
        assert state in STATES, state
        status = read_status(self.run_dir)
        status.update(fields, state=state, updated_at=time.time())
        status.setdefault("started_at", status["updated_at"])
        _write_json_atomic(self.run_dir / "status.json", _json_safe(status))
        return status

    def record_pid(self, pid: int) -> None:
        """Set the pid of a just-spawned trainer, unless the trainer already wrote its status."""
        status = read_status(self.run_dir)
        if not status.get("pid"):
            # updated_at after the spawn: see effective_state on how a trainer is told from a recycled pid
            status.update(pid=pid, updated_at=time.time())
            _write_json_atomic(self.run_dir / "status.json", status)

    def _append_line(self, name: str, record: dict) -> None:
        with open(self.run_dir / name, "a", encoding="utf-8") as f:
            f.write(json.dumps(_json_safe(record), ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def append_metrics(self, row: dict) -> None:
        self._append_line("metrics.jsonl", row)

    def append_rollouts(self, step: int, groups: list[dict]) -> None:
        self._append_line("rollouts.jsonl", {"step": step, "groups": groups})

    def append_sft_metrics(self, row: dict) -> None:
        self._append_line(SFT_METRICS_FILE, row)

    def append_eval_metrics(self, row: dict) -> None:
        self._append_line(EVAL_METRICS_FILE, row)

    def commit_sft_adapter(self, staging: Path) -> Path:
        """Rename a fully written warm-start adapter into place, so a crash never leaves half of one."""
        final = self.checkpoints_dir / SFT_ADAPTER_DIR
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)
        return final

    def discard_warm_start(self) -> None:
        """Before a fresh start: a warm start left by an earlier attempt in this directory is stale."""
        shutil.rmtree(self.checkpoints_dir / SFT_ADAPTER_DIR, ignore_errors=True)
        (self.run_dir / SFT_METRICS_FILE).unlink(missing_ok=True)

    def log(self, text: str, step: int | None = None) -> None:
        tag = f"[step {step}] " if step is not None else ""
        stamp = time.strftime("%H:%M:%S")
        lines = [f"{stamp} {tag}{line}" for line in text.rstrip("\n").splitlines() or [""]]
        with open(self.run_dir / "logs.txt", "a", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")

    def take_lines(self) -> list[str]:
        """Log lines held back for another process to write: none, this writer writes its own."""
        return []

    def checkpoint_staging_dir(self, step: int) -> Path:
        """Write a checkpoint here, then `commit_checkpoint` renames it into place."""
        staging = self.checkpoints_dir / f".tmp-step-{step}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        return staging

    def commit_checkpoint(self, step: int, staging: Path) -> Path:
        final = self.checkpoints_dir / f"step-{step}"
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)
        return final

    def truncate_after(self, step: int) -> None:
        """Before resuming from checkpoint `step` (0: a fresh start): drop half-written lines, later
        steps and later checkpoints, which a resume would otherwise load in place of this one."""
        for name in ("metrics.jsonl", "rollouts.jsonl", EVAL_METRICS_FILE):
            path = self.run_dir / name
            if not path.exists():
                continue
            kept = []
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True):
                if not line.endswith("\n"):
                    break
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    break
                if record.get("step", 0) <= step:
                    kept.append(line)
            tmp = path.with_name(f".{name}.tmp")
            tmp.write_text("".join(kept), encoding="utf-8")
            os.replace(tmp, path)
        for stale in self.checkpoints_dir.glob(".tmp-step-*"):
            shutil.rmtree(stale, ignore_errors=True)
        for later in list_checkpoints(self.run_dir):
            if later > step:
                shutil.rmtree(self.checkpoints_dir / f"step-{later}", ignore_errors=True)
        reward_versions.truncate_after(self.run_dir, step)

    def request_stop(self) -> None:
        (self.run_dir / "stop").touch()

    def stop_requested(self) -> bool:
        return (self.run_dir / "stop").exists()

    def clear_stop_request(self) -> None:
        (self.run_dir / "stop").unlink(missing_ok=True)


class FollowerWriter(RunWriter):
    """The writer of a data-parallel process other than the main one (rft.distributed): the main
    process alone writes the run directory. This one reads the stop request like any writer,
    writes nothing, and keeps its log lines for the main process to write."""

    def __init__(self, run_dir: str | Path, rank: int):
        super().__init__(run_dir)
        self.rank = rank
        self.held_lines: list[str] = []

    def create(self, config: RunConfig) -> None:
        pass

    def set_status(self, state: str, **fields) -> dict:
        return {}

    def _append_line(self, name: str, record: dict) -> None:
        pass

    def log(self, text: str, step: int | None = None) -> None:
        tag = f"[step {step}] " if step is not None else ""
        self.held_lines += [f"[process {self.rank}] {tag}{line}" for line in text.rstrip("\n").splitlines()]

    def take_lines(self) -> list[str]:
        lines, self.held_lines = self.held_lines, []
        return lines

    def truncate_after(self, step: int) -> None:
        pass

    def clear_stop_request(self) -> None:
        pass

    def discard_warm_start(self) -> None:
        pass

def read_status(run_dir: str | Path) -> dict:
    try:
        return json.loads((Path(run_dir) / "status.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def read_config(run_dir: str | Path) -> RunConfig:
    return RunConfig.load(Path(run_dir) / "config.yaml")


def _read_jsonl(path: Path) -> list[dict]:
    """Whole lines only: a line still being written (no newline yet) is left for the next read."""
    try:
        f = open(path, encoding="utf-8", errors="replace")
    except FileNotFoundError:  # not written yet, or the run was deleted
        return []
    records = []
    with f:
        for line in f:
            if not line.endswith("\n"):
                break
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def read_metrics(run_dir: str | Path) -> pd.DataFrame:
    """All metrics rows as a DataFrame indexed by step (per-group lists stay as list cells)."""
    records = _read_jsonl(Path(run_dir) / "metrics.jsonl")
    frame = pd.DataFrame.from_records(records)
    if not frame.empty and "step" in frame:
        frame = frame.drop_duplicates("step", keep="last").set_index("step", drop=False).sort_index()
    return frame


_STEP_PREFIX = re.compile(rb'^\{"step": (\d+)')


@dataclass
class _StepIndex:
    """Byte offset of each step's line in a rollouts file, extended as the file grows, so the
    Rollouts tab reads one line instead of parsing every step of a long run on each refresh."""

    inode: int
    scanned: int
    offsets: dict[int, int]


_STEP_INDEXES: dict[Path, _StepIndex] = {}


def _rollout_offsets(path: Path) -> dict[int, int]:
    try:
        stat = path.stat()
    except FileNotFoundError:
        _STEP_INDEXES.pop(path, None)
        return {}
    index = _STEP_INDEXES.get(path)
    if index is None or index.inode != stat.st_ino or stat.st_size < index.scanned:
        index = _STEP_INDEXES[path] = _StepIndex(stat.st_ino, 0, {})  # new or rewritten by a resume
    try:
        f = open(path, "rb")
    except FileNotFoundError:  # deleted since the stat
        _STEP_INDEXES.pop(path, None)
        return {}
    with f:
        f.seek(index.scanned)
        for line in f:
            if not line.endswith(b"\n"):
                break
            match = _STEP_PREFIX.match(line)
            if match:
                index.offsets[int(match.group(1))] = index.scanned
            index.scanned += len(line)
    return index.offsets


def read_rollouts(run_dir: str | Path, step: int | None = None) -> dict | None:
    """The rollouts of `step` (the latest when None), or None when there are none yet."""
    path = Path(run_dir) / "rollouts.jsonl"
    offsets = _rollout_offsets(path)
    if not offsets:
        return None
    offset = offsets[max(offsets)] if step is None else offsets.get(step)
    if offset is None:
        return None
    try:
        f = open(path, "rb")
    except FileNotFoundError:  # the run was deleted since the index was read
        return None
    with f:
        f.seek(offset)
        try:
            return json.loads(f.readline().decode("utf-8", errors="replace"))
        except json.JSONDecodeError:
            return None


def read_all_rollouts(run_dir: str | Path) -> list[dict]:
    """Every step's rollouts, oldest first: {"step": N, "groups": [...]} per step."""
    return _read_jsonl(Path(run_dir) / "rollouts.jsonl")


def read_eval_metrics(run_dir: str | Path) -> pd.DataFrame:
    """The held-out evaluations (one row per evaluation, by step); empty when the run has none."""
    frame = pd.DataFrame.from_records(_read_jsonl(Path(run_dir) / EVAL_METRICS_FILE))
    return frame.sort_values("step").reset_index(drop=True) if "step" in frame else frame


def read_sft_metrics(run_dir: str | Path) -> pd.DataFrame:
    """The SFT warm start's rows (step, loss, learning_rate, tokens, ...), indexed by step; empty without one."""
    frame = pd.DataFrame.from_records(_read_jsonl(Path(run_dir) / SFT_METRICS_FILE))
    if not frame.empty and "step" in frame:
        frame = frame.drop_duplicates("step", keep="last").set_index("step", drop=False).sort_index()
    return frame


def sft_adapter_path(run_dir: str | Path) -> Path | None:
    """The warm-started adapter of a run, or None when it has none (yet)."""
    folder = Path(run_dir) / "checkpoints" / SFT_ADAPTER_DIR
    return folder if (folder / "adapter_model.safetensors").is_file() else None


def rollout_steps(run_dir: str | Path) -> list[int]:
    return sorted(_rollout_offsets(Path(run_dir) / "rollouts.jsonl"))


def tail_logs(run_dir: str | Path, max_lines: int = 200) -> str:
    try:
        f = open(Path(run_dir) / "logs.txt", "rb")
    except FileNotFoundError:  # not written yet, or the run was deleted
        return ""
    with f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 256 * 1024))
        text = f.read().decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-max_lines:])


def list_checkpoints(run_dir: str | Path) -> list[int]:
    try:
        entries = list((Path(run_dir) / "checkpoints").iterdir())
    except (FileNotFoundError, NotADirectoryError):  # none yet, or the run was deleted
        return []
    steps = [int(m.group(1)) for p in entries if (m := CHECKPOINT_PATTERN.match(p.name)) and p.is_dir()]
    return sorted(steps)


def checkpoint_path(run_dir: str | Path, step: int | None = None) -> Path | None:
    """The directory of checkpoint `step` (the latest when None), or None when there is none."""
    steps = list_checkpoints(run_dir)
    if not steps:
        return None
    if step is None:
        step = steps[-1]
    if step not in steps:
        return None
    return Path(run_dir) / "checkpoints" / f"step-{step}"


def extended_config(run_dir: str | Path, max_steps: int) -> RunConfig:
    """A run's config with its length changed to `max_steps`, so that a run that has ended (finished
    or stopped) trains on from its last checkpoint. Prompts are drawn by step number and the
    checkpoint holds the random state, so the steps after it are those a run planned this long
    would have taken. A decaying learning rate would not be: its rate at each step follows from the
    planned length, so it is refused. Raises ValueError saying why a run cannot be extended."""
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    state = effective_state(read_status(run_dir))
    if state in ACTIVE_STATES:
        raise ValueError(f"run {run_dir.name} is {state}: stop it before changing its length")
    last = (list_checkpoints(run_dir) or [0])[-1]
    if max_steps <= last:
        raise ValueError(f"max steps {max_steps}: run {run_dir.name} has a checkpoint at step {last} already; "
                         f"choose more steps than that")
    if config.optim.lr_scheduler != "constant":
        raise ValueError(f"run {run_dir.name} decays its learning rate ({config.optim.lr_scheduler}) over the "
                         f"steps it planned, so a longer run would have used other rates: start a new run from "
                         f"its last checkpoint instead (model.adapter)")
    config.schedule.max_steps, config.schedule.epochs = max_steps, None
    return config.validate()


def extend_run(run_dir: str | Path, max_steps: int) -> RunConfig:
    """Change an ended run's length (`extended_config`) in its directory, ready to resume."""
    planned = read_config(run_dir).schedule.max_steps
    config = extended_config(run_dir, max_steps)
    staged = Path(run_dir) / "config.yaml.tmp"  # other processes of a launched run may be reading it
    config.save(staged)
    os.replace(staged, Path(run_dir) / "config.yaml")
    writer = RunWriter(run_dir)
    writer.log(f"length changed from {planned} to {max_steps} steps; it goes on from its last checkpoint")
    writer.set_status("stopped", max_steps=max_steps)
    return config


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def process_started_at(pid: int) -> float | None:
    """When a process started (Unix time), from Linux's /proc; None where that cannot be read."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            ticks_after_boot = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as f:
            boot_time = next(int(line.split()[1]) for line in f if line.startswith("btime "))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return boot_time + ticks_after_boot / os.sysconf("SC_CLK_TCK")


def effective_state(status: dict) -> str:
    """The state on disk, corrected when the trainer died without saying so.

    A dead trainer's pid can be reused by another program (after a reboot, say). The trainer was
    running when status.json was last updated, so a process that started after that is not it.
    """
    state = status.get("state", "unknown")
    pid = status.get("pid")
    if state not in ACTIVE_STATES or not pid:
        return state
    started_at = process_started_at(pid)
    recycled = started_at is not None and started_at > status.get("updated_at", started_at) + PID_CLOCK_SLACK_S
    return "failed" if recycled or not pid_alive(pid) else state


@dataclass
class RunSummary:
    run_id: str
    run_dir: Path
    state: str
    model: str
    dataset: str
    step: int
    max_steps: int
    last_reward: float | None
    started_at: float | None
    updated_at: float | None
    error: str | None

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None or self.updated_at is None:
            return None
        end = time.time() if self.state in ACTIVE_STATES else self.updated_at
        return max(0.0, end - self.started_at)


def summarize_run(run_dir: str | Path) -> RunSummary:
    run_dir = Path(run_dir)
    status = read_status(run_dir)
    try:
        config = read_config(run_dir)
        model, dataset = config.model.name_or_path, config.data.path or config.data.preset or "?"
    except Exception:
        model, dataset = "?", "?"
    return RunSummary(
        run_id=run_dir.name,
        run_dir=run_dir,
        state=effective_state(status),
        model=model,
        dataset=dataset,
        step=int(status.get("step") or 0),
        max_steps=int(status.get("max_steps") or 0),
        last_reward=status.get("last_reward"),
        started_at=status.get("started_at"),
        updated_at=status.get("updated_at"),
        error=status.get("error"),
    )


def list_runs(runs_root: str | Path | None = None) -> list[RunSummary]:
    """Every run directory under the root (newest first), including runs started from the CLI."""
    root = Path(runs_root) if runs_root else default_runs_root()
    if not root.is_dir():
        return []
    runs = [summarize_run(p) for p in root.iterdir() if p.is_dir() and (p / "config.yaml").exists()]
    return sorted(runs, key=lambda r: r.started_at or 0, reverse=True)


def delete_run(run_dir: str | Path) -> None:
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise ValueError(f"{run_dir} is not a run directory (no config.yaml); nothing was deleted")
    status = read_status(run_dir)
    if effective_state(status) in ACTIVE_STATES:
        raise RuntimeError(f"run {run_dir.name} is still {status.get('state')}; stop it before deleting")
    shutil.rmtree(run_dir)
