"""Experiment trackers a run is mirrored to (`report.to`), for people who already watch one.

The run directory stays the source of truth: the dashboard reads only it, and a tracker gets a
copy of what the trainer writes there, under the same names: every metrics row (and held-out
evaluation row), each step's completions as a table, the config as the run's parameters.

- tensorboard: event files in the run directory's `tensorboard/` (`tensorboard --logdir runs`);
- trackio: Hugging Face's local-first tracker, in its own local store (`trackio show --project rft`).

A tracker that fails (its package missing, a full disk, ...) is logged once with what to do and
switched off; the training goes on.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from rft.config import RunConfig

INSTALL_HINT = "pip install -r requirements-trackers.txt -c requirements.txt"
COMPLETIONS_SHOWN = 64  # per step: a tracker's table is for reading, the run directory has them all


def numeric_values(row: dict) -> dict[str, float]:
    """The row's finite numbers (lists, texts and missing values are not scalars to chart)."""
    return {key: float(value) for key, value in row.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)}


def completion_rows(step: int, groups: list[dict]) -> list[dict]:
    """The step's completions, one row each: prompt, completion, total reward and advantage."""
    rows = []
    for group in groups:
        for index, completion in enumerate(group.get("completions", [])):
            rows.append({"step": step, "prompt": str(group.get("prompt", ""))[-300:], "completion": completion,
                         "total": _at(group.get("total"), index), "advantage": _at(group.get("advantages"), index)})
    return rows[:COMPLETIONS_SHOWN]


def _at(values, index):
    return values[index] if isinstance(values, list) and index < len(values) else None


class TensorBoardTracker:
    name = "tensorboard"

    def __init__(self, run_dir: Path, config: RunConfig):
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        self.writer.add_text("config", f"```yaml\n{config.to_yaml()}\n```", 0)

    def log_metrics(self, step: int, row: dict) -> None:
        for key, value in numeric_values(row).items():
            if key != "step":
                self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def log_completions(self, step: int, rows: list[dict]) -> None:
        lines = ["| total | advantage | completion |", "|---:|---:|---|"]
        lines += [f"| {row['total']} | {row['advantage']} | {_markdown_cell(row['completion'])} |" for row in rows]
        self.writer.add_text("completions", "\n".join(lines), step)

    def close(self) -> None:
        self.writer.close()


def _markdown_cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")[:400]


class TrackioTracker:
    name = "trackio"

    def __init__(self, run_dir: Path, config: RunConfig):
        import trackio

        self.trackio = trackio
        # No system-metrics thread and no browser: the dashboard is where this run is watched live.
        self.run = trackio.init(project=config.report.project, name=run_dir.name, config=config.to_dict(),
                                embed=False, auto_log_cpu=False, auto_log_gpu=False)

    def log_metrics(self, step: int, row: dict) -> None:
        values = {key: value for key, value in numeric_values(row).items() if key != "step"}
        self.run.log(values, step=step)

    def log_completions(self, step: int, rows: list[dict]) -> None:
        import pandas as pd

        self.run.log({"completions": self.trackio.Table(dataframe=pd.DataFrame(rows))}, step=step)

    def close(self) -> None:
        self.run.finish()


TRACKER_CLASSES = {tracker.name: tracker for tracker in (TensorBoardTracker, TrackioTracker)}


class Trackers:
    """The run's trackers; each failure is logged once (`log`) and that tracker switched off."""

    def __init__(self, config: RunConfig, run_dir: str | Path, log: Callable[[str], None]):
        self.log = log
        self.active = []
        for name in config.report.to:
            try:
                self.active.append(TRACKER_CLASSES[name](Path(run_dir), config))
            except ImportError as exc:
                log(f"report: {name} is off: its package is not installed ({exc.name}); `{INSTALL_HINT}` installs it")
            except Exception as exc:
                log(f"report: {name} is off: it could not start: {type(exc).__name__}: {exc}")
        if self.active:
            log(f"report: mirroring the run to {', '.join(tracker.name for tracker in self.active)}")

    def log_metrics(self, step: int, row: dict) -> None:
        self._each("log_metrics", step, row)

    def log_completions(self, step: int, groups: list[dict]) -> None:
        if self.active:
            self._each("log_completions", step, completion_rows(step, groups))

    def close(self) -> None:
        self._each("close")
        self.active = []

    def _each(self, method: str, *args) -> None:
        for tracker in list(self.active):
            try:
                getattr(tracker, method)(*args)
            except Exception as exc:
                self.active.remove(tracker)
                self.log(f"report: {tracker.name} failed and is off for the rest of the run "
                         f"({type(exc).__name__}: {exc}); the run directory keeps everything")
