"""Experiment trackers a run is mirrored to (`report.to`), for people who already watch one.

The run directory stays the source of truth: the dashboard reads only it, and a tracker gets a
copy of what the trainer writes there, under the same names: every metrics row (and held-out
evaluation row), each step's completions as a table, the config as the run's parameters.

- tensorboard: event files in the run directory's `tensorboard/` (`tensorboard --logdir runs`);
- trackio: Hugging Face's local-first tracker, in its own local store (`trackio show --project rft`);
- wandb: Weights & Biases, offline into the run directory's `wandb/` (`wandb sync` uploads it later)
  unless W&B is set up on this machine (WANDB_MODE, WANDB_API_KEY or a `wandb login`);
- mlflow: the MLflow server of MLFLOW_TRACKING_URI, else a file store in the run directory's
  `mlruns/` (`mlflow ui --backend-store-uri runs/<id>/mlruns`).

A tracker that fails (its package missing, a full disk, ...) is logged once with what to do and
switched off; the training goes on.
"""

from __future__ import annotations

import math
import netrc
import os
import time
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


class WandbTracker:
    name = "wandb"

    def __init__(self, run_dir: Path, config: RunConfig):
        import wandb

        self.wandb = wandb
        self.run = wandb.init(project=config.report.project, name=run_dir.name, dir=str(run_dir),
                              config=config.to_dict(), mode=os.environ.get("WANDB_MODE") or wandb_mode(),
                              settings=wandb.Settings(x_disable_stats=True, console="off", silent=True))

    def log_metrics(self, step: int, row: dict) -> None:
        self.run.log({key: value for key, value in numeric_values(row).items() if key != "step"}, step=step)

    def log_completions(self, step: int, rows: list[dict]) -> None:
        import pandas as pd

        self.run.log({"completions": self.wandb.Table(dataframe=pd.DataFrame(rows))}, step=step)

    def close(self) -> None:
        self.run.finish()


def wandb_mode() -> str:
    """online when this machine is logged in to W&B (an API key in the environment or ~/.netrc), else
    offline: nothing leaves the machine unless the user set W&B up."""
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        return "online" if netrc.netrc().authenticators("api.wandb.ai") else "offline"
    except (OSError, netrc.NetrcParseError):
        return "offline"


class MLflowTracker:
    name = "mlflow"

    def __init__(self, run_dir: Path, config: RunConfig):
        import mlflow

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            # MLflow keeps its plain file store for exactly this (no server, no database), behind an opt-in.
            os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
            uri = (run_dir / "mlruns").resolve().as_uri()
        self.client = mlflow.MlflowClient(tracking_uri=uri)
        experiment = self.client.get_experiment_by_name(config.report.project)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(config.report.project)
        self.run_id = self.client.create_run(experiment_id, run_name=run_dir.name).info.run_id
        from mlflow.entities import Param

        self.client.log_batch(self.run_id, params=[Param(key, value) for key, value in config_parameters(config).items()])
        self.client.log_text(self.run_id, config.to_yaml(), "config.yaml")

    def log_metrics(self, step: int, row: dict) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, value, now, step) for key, value in numeric_values(row).items() if key != "step"]
        self.client.log_batch(self.run_id, metrics=metrics)

    def log_completions(self, step: int, rows: list[dict]) -> None:
        import pandas as pd

        self.client.log_table(self.run_id, data=pd.DataFrame(rows), artifact_file=f"completions/step-{step}.json")

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


def config_parameters(config: RunConfig) -> dict[str, str]:
    """The config as flat `section.field` parameters; code (reward and environment source) goes in
    config.yaml beside them, since a parameter is a short value."""
    parameters = {}
    for section, fields in config.to_dict().items():
        if not isinstance(fields, dict):
            parameters[section] = str(fields)
            continue
        for key, value in fields.items():
            if key != "source":
                parameters[f"{section}.{key}"] = str(value)[:500]
    return parameters


TRACKER_CLASSES = {tracker.name: tracker for tracker in (TensorBoardTracker, TrackioTracker, WandbTracker,
                                                         MLflowTracker)}


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
