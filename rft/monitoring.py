"""Reading a run the way the dashboard shows it, without Gradio: progress and time left, metrics
thinned for charts, rollouts flattened into a table, and completions that look like reward hacking.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from rft.runs import ACTIVE_STATES, RunSummary

DISPLAY_POINTS = 600  # per chart line: plenty for a 1280-pixel-wide screen
WATCHED_FILES = ("status.json", "metrics.jsonl", "rollouts.jsonl", "logs.txt", "sft_metrics.jsonl", "eval_metrics.jsonl")
ETA_WINDOW = 20  # recent steps whose mean duration predicts the rest


def format_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    seconds = int(round(max(0.0, seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def change_signature(run_dir: str | Path | None) -> tuple:
    """Changes whenever the trainer writes anything the dashboard shows; cheap to compute every tick."""
    if not run_dir:
        return ()
    signature = []
    for name in WATCHED_FILES:
        try:
            stat = (Path(run_dir) / name).stat()
            signature.append((stat.st_mtime_ns, stat.st_size))
        except OSError:
            signature.append(None)
    return tuple(signature)


@dataclass
class Progress:
    state: str
    step: int  # of the SFT warm start while it runs, else of GRPO
    max_steps: int
    elapsed_s: float | None
    remaining_s: float | None  # of the current stage
    phase: str | None
    error: str | None
    warm_start: bool = False  # step, max_steps and remaining_s are the SFT warm start's

    @property
    def fraction(self) -> float:
        return min(1.0, self.step / self.max_steps) if self.max_steps else 0.0

    def describe(self) -> str:
        stage = "SFT warm start: " if self.warm_start else ""
        text = f"{stage}step {self.step} of {self.max_steps or '?'} · elapsed {format_duration(self.elapsed_s)}"
        if self.state in ACTIVE_STATES:
            until = " until GRPO starts" if self.warm_start else ""
            text += f" · about {format_duration(self.remaining_s)} left{until}" if self.remaining_s is not None else \
                " · estimating time left"
            if self.phase and self.phase != "training" and not self.warm_start:
                text += f" · {self.phase}"
        return text


def run_progress(state: str, status: dict, metrics: pd.DataFrame, now: float | None = None,
                 sft_metrics: pd.DataFrame | None = None) -> Progress:
    """Where a run stands; the time left is the mean of recent step durations times the steps to go.
    During the SFT warm start that is the warm start's steps (status.json's sft_step / sft_steps,
    durations from `sft_metrics`). Elapsed is counted to `now` while the run is active, so it moves
    on every render, not only when the trainer writes."""
    now = time.time() if now is None else now
    warm_start = state in ACTIVE_STATES and status.get("phase") == "sft" and bool(status.get("sft_steps"))
    if warm_start:
        step, max_steps, step_times = int(status.get("sft_step") or 0), int(status["sft_steps"]), sft_metrics
    else:
        step, max_steps, step_times = int(status.get("step") or 0), int(status.get("max_steps") or 0), metrics
    started = status.get("started_at")
    if started is None:
        elapsed = None
    elif state in ACTIVE_STATES:
        elapsed = now - started
    else:
        elapsed = (status.get("updated_at") or now) - started
    remaining = None
    if state in ACTIVE_STATES and step_times is not None and "time/step" in step_times and len(step_times):
        recent = pd.to_numeric(step_times["time/step"], errors="coerce").dropna().tail(ETA_WINDOW)
        if len(recent):
            remaining = float(recent.mean()) * max(0, max_steps - step)
    return Progress(state, step, max_steps, elapsed, remaining, status.get("phase"), status.get("error"), warm_start)


def downsample(frame: pd.DataFrame, max_points: int = DISPLAY_POINTS) -> pd.DataFrame:
    """Numeric columns thinned to at most `max_points` rows by averaging consecutive steps.

    Averaging (not skipping) keeps spikes visible as bumps and never draws a step that hides its
    neighbours; the index stays the last step of each bucket, so the newest point is always exact.
    """
    numeric = frame.select_dtypes(include="number")
    if len(numeric) <= max_points:
        return numeric
    bucket = np.arange(len(numeric)) * max_points // len(numeric)
    grouped = numeric.groupby(bucket)
    thinned = grouped.mean()
    thinned.index = [numeric.index[grouped.indices[b][-1]] for b in thinned.index]
    if "step" in thinned:
        thinned["step"] = thinned.index
    return thinned


def reward_function_names(metrics: pd.DataFrame) -> list[str]:
    """Reward functions logged in the metrics, in the order the trainer wrote them."""
    return [c[len("rewards/"):-len("/mean")] for c in metrics.columns if c.startswith("rewards/") and c.endswith("/mean")]


NO_SIGNAL_STEPS = 3  # consecutive steps whose groups all lack a reward spread before a warning
NO_SIGNAL_ADVICE = ("Give partial credit in the reward code, raise the temperature or the completions per prompt, "
                    "or turn on dynamic sampling.")


def no_signal_warning(metrics: pd.DataFrame) -> str | None:
    """A warning when the latest NO_SIGNAL_STEPS steps had no group with a reward spread: every
    advantage was zero, so the rewards taught the policy nothing."""
    if "frac_reward_zero_std" not in metrics or len(metrics) < NO_SIGNAL_STEPS:
        return None
    if not (metrics["frac_reward_zero_std"].tail(NO_SIGNAL_STEPS) == 1.0).all():
        return None
    return (f"No learning signal: in each of the last {NO_SIGNAL_STEPS} steps every completion of a group got the "
            f"same reward, so every advantage was zero. {NO_SIGNAL_ADVICE}")


def reward_version_changes(metrics: pd.DataFrame) -> list[tuple[int, int]]:
    """(step, version) for each step whose reward code differs from the step before: the edits
    applied to a running job (rft.rewards.versions), which every chart marks."""
    if "reward_version" not in metrics.columns or metrics.empty:
        return []
    versions = metrics["reward_version"].ffill()
    changed = versions.ne(versions.shift()) & versions.shift().notna()
    return [(int(step), int(version)) for step, version in versions[changed].items()]


# ---- rollouts ---------------------------------------------------------------------------------

ROLLOUT_COLUMNS = ("group", "sample", "prompt", "completion", "total", "advantage", "tokens", "truncated",
                   "turns", "messages", "problem")
ROLE_LABELS = {"assistant": "model", "user": "environment", "tool": "tool"}


def episode_transcript(messages: list[dict]) -> str:
    """An episode's messages as text, each under its speaker: [model], [environment], [tool]."""
    return "\n\n".join(f"[{ROLE_LABELS.get(m['role'], m['role'])}] {m['content'].strip()}" for m in messages)


def rollout_frame(record: dict | None) -> pd.DataFrame:
    """One row per completion of a step's rollouts: group, completion, each function's reward, total,
    advantage, token count, truncated; `prompt` holds the group's prompt for the group table. An
    episode's completion is its transcript, with its turns, messages and any environment problem."""
    rows = []
    for group_index, group in enumerate((record or {}).get("groups", []), start=1):
        functions = group.get("rewards", {})
        episodes = group.get("episodes")
        for i, completion in enumerate(group.get("completions", [])):
            row = {"group": group_index, "sample": i + 1, "prompt": group.get("prompt", ""), "completion": completion}
            if episodes:
                episode = episodes[i]
                row.update(completion=episode_transcript(episode["messages"]), turns=episode["turns"],
                           messages=episode["messages"], problem=episode.get("problem") or "")
            for name, values in functions.items():
                row[name] = _number(values[i] if i < len(values) else None)
            row["total"] = _number(_at(group.get("total"), i))
            row["advantage"] = _number(_at(group.get("advantages"), i))
            row["tokens"] = int(_at(group.get("completion_tokens"), i) or 0)
            row["truncated"] = bool(_at(group.get("truncated"), i))
            rows.append(row)
    return pd.DataFrame(rows)


def reward_columns(frame: pd.DataFrame) -> list[str]:
    """The per-function reward columns of a rollout frame, in the trainer's order."""
    return [c for c in frame.columns if c not in ROLLOUT_COLUMNS and c != "flags"]


def _at(values, index):
    return values[index] if isinstance(values, list) and index < len(values) else None


def _number(value) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else float("nan")


def group_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per group: its prompt, reward mean / spread, and whether the spread is zero (no learning signal)."""
    if frame.empty:
        return pd.DataFrame(columns=["group", "prompt", "mean", "std", "min", "max", "signal"])
    stats = frame.groupby("group").agg(prompt=("prompt", "first"), mean=("total", "mean"),
                                       std=("total", lambda s: float(np.std(s))),
                                       min=("total", "min"), max=("total", "max")).reset_index()
    stats["signal"] = np.where(stats["max"] - stats["min"] > 1e-9, "yes", "none (equal rewards)")
    return stats


@dataclass(frozen=True)
class HackingRule:
    """What counts as suspicious in one step's completions."""

    task_function: str | None  # the reward that measures the real task, as the user marks it
    high_quantile: float = 0.75  # "high total": at or above this quantile of the step's totals
    low_quantile: float = 0.25  # "low task signal": at or below this quantile of the task scores
    length_ratio: float = 2.0  # "length blow-up": this many times the step's median token count


def flag_suspects(frame: pd.DataFrame, rule: HackingRule) -> pd.DataFrame:
    """`frame` with a `flags` column naming why each completion looks like reward hacking.

    High total with a low task score means other rewards (format, length, ...) carry it; a length
    far above the step's median, or one cut at the limit, is the classic verbosity exploit.
    """
    frame = frame.copy()
    flags = [[] for _ in range(len(frame))]
    if not frame.empty:
        totals = frame["total"]
        task = rule.task_function
        if task and task in frame and totals.nunique(dropna=True) > 1:
            task_scores = frame[task]
            high_total = totals >= totals.quantile(rule.high_quantile)
            low_task = (task_scores <= task_scores.quantile(rule.low_quantile)) & (task_scores < task_scores.max())
            for position in np.flatnonzero((high_total & low_task).to_numpy()):
                flags[position].append(f"high total, low {task}")
        median_tokens = float(frame["tokens"].median())
        for position, (tokens, truncated) in enumerate(zip(frame["tokens"], frame["truncated"])):
            if median_tokens > 0 and tokens >= rule.length_ratio * median_tokens:
                flags[position].append(f"long ({tokens / median_tokens:.1f}x median)")
            if truncated:
                flags[position].append("truncated")
        for position, problem in enumerate(frame["problem"] if "problem" in frame else []):
            if problem:
                flags[position].append("environment failed: " + problem.strip().splitlines()[-1])
    frame["flags"] = ["; ".join(f) for f in flags]
    return frame


def suspect_count(frame: pd.DataFrame) -> int:
    """Completions flagged for anything but plain truncation."""
    if "flags" not in frame:
        return 0
    return int(frame["flags"].str.contains("high total|long", regex=True).sum())


def best_and_worst(frame: pd.DataFrame) -> tuple[dict | None, dict | None]:
    """The highest- and lowest-reward completions of the step (None when there are none)."""
    scored = frame.dropna(subset=["total"]) if not frame.empty else frame
    if scored.empty:
        return None, None
    return scored.loc[scored["total"].idxmax()].to_dict(), scored.loc[scored["total"].idxmin()].to_dict()


ROLLOUT_VIEWS = ("all", "best of each group", "worst of each group", "suspected hacking", "truncated")


def select_rollouts(frame: pd.DataFrame, view: str, sort: str) -> pd.DataFrame:
    """The rows a view shows, sorted by `sort` ('total', 'advantage', 'tokens' or 'group')."""
    if frame.empty:
        return frame
    if view == "best of each group":
        frame = frame.loc[frame.groupby("group")["total"].idxmax().dropna()]
    elif view == "worst of each group":
        frame = frame.loc[frame.groupby("group")["total"].idxmin().dropna()]
    elif view == "suspected hacking":
        frame = frame[frame["flags"].str.contains("high total|long", regex=True)]
    elif view == "truncated":
        frame = frame[frame["truncated"]]
    if sort == "group":
        return frame.sort_values(["group", "sample"])
    return frame.sort_values(sort, ascending=False, na_position="last")


# ---- runs -------------------------------------------------------------------------------------

RUNS_COLUMNS = ["run", "state", "model", "dataset", "steps", "last reward", "started", "duration"]


def runs_frame(runs: list[RunSummary]) -> pd.DataFrame:
    """The Runs table: one readable row per run."""
    rows = []
    for run in runs:
        rows.append([
            run.run_id,
            run.state,
            _short_model(run.model),
            Path(run.dataset).name if "/" in run.dataset else run.dataset,
            f"{run.step} / {run.max_steps}" if run.max_steps else str(run.step),
            f"{run.last_reward:.3f}" if isinstance(run.last_reward, (int, float)) else "-",
            time.strftime("%Y-%m-%d %H:%M", time.localtime(run.started_at)) if run.started_at else "-",
            format_duration(run.duration_s),
        ])
    return pd.DataFrame(rows, columns=RUNS_COLUMNS)


def _short_model(reference: str) -> str:
    if reference.startswith("bundled:"):
        return reference.split(":", 1)[1]
    return Path(reference).name if "/" in reference else reference
