"""A sweep: one run per point of a small grid of config values, each evaluated on held-out items.

    python -m rft sweep --preset arithmetic --grid grpo.beta=0,0.04 --grid optim.learning_rate=5e-5,1e-4 \
        --set schedule.max_steps=40 --eval-count 500

Runs train one after the other (each gets the machine's cores), into the runs directory under
names that start with the sweep's name, so the Runs tab lists them together. Each run's last
checkpoint, and the model it started from, are evaluated by the task's evaluator on the same
held-out items; the table gives each headline rate with its 95% Wilson interval and its change
from the start with the interval of that change (paired over the same problems for arithmetic),
and is written next to the runs as <name>.sweep.json and <name>.sweep.md.
"""

from __future__ import annotations

import gzip
import itertools
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from rft import tasks
from rft.config import ConfigError, RunConfig
from rft.monitoring import format_duration
from rft.stats import (
    cluster_bootstrap_mean,
    difference_interval,
    paired_cluster_bootstrap_difference,
    paired_difference,
    wilson_interval,
)

@dataclass(frozen=True)
class SweepPoint:
    overrides: dict[str, object]  # dotted field -> value

    @property
    def label(self) -> str:
        return ", ".join(f"{key}={value}" for key, value in self.overrides.items()) or "(the config as it is)"

    @property
    def slug(self) -> str:
        parts = [f"{key.rsplit('.', 1)[-1]}-{value}" for key, value in self.overrides.items()]
        return "-".join(parts).replace("/", "_") or "base"


def parse_grid(assignments: list[str]) -> list[SweepPoint]:
    """`field=v1,v2` strings -> every combination of their values (values parsed as YAML)."""
    axes = []
    problems = []
    for assignment in assignments:
        key, sep, values = assignment.partition("=")
        if not sep or not key.strip() or not values.strip():
            problems.append(f"--grid {assignment!r}: expected section.key=value1,value2")
            continue
        axes.append([(key.strip(), yaml.safe_load(value)) for value in values.split(",")])
    if problems:
        raise ConfigError(problems)
    return [SweepPoint(dict(combination)) for combination in itertools.product(*axes)]


def run_sweep(base: RunConfig, points: list[SweepPoint], runs_root: str | Path, name: str, eval_count: int,
              eval_seed: int = 0, eval_max_new_tokens: int | None = None, progress: bool = True) -> dict:
    """Train and evaluate every point; returns the sweep's record (also written next to the runs)."""
    from rft.evaluation import BASE_CHOICE, SFT_CHOICE, checkpoint_choices
    from rft.grpo.trainer import train
    from rft.runs import new_run_id, run_dir_for

    task = base.data.preset if not base.data.path else None
    if task is None or tasks.task(task) is None or tasks.task(task).evaluator is None:
        evaluated = [name for name in tasks.built_in_names() if tasks.task(name).evaluator]
        raise ConfigError([f"data: a sweep evaluates on a task's held-out items; only the "
                           f"{', '.join(evaluated)} presets have an evaluator"])
    configs = [base.with_overrides([f"{key}={json.dumps(value)}" for key, value in point.overrides.items()])
               for point in points]
    for config in configs:
        config.validate()

    rows = []
    for index, (point, config) in enumerate(zip(points, configs), start=1):
        config.name = f"{name}-{index}-{point.slug}"
        run_dir = run_dir_for(runs_root, new_run_id(config.name))
        started = time.perf_counter()
        train(config, run_dir, progress=progress)
        trained_s = time.perf_counter() - started
        if index == 1:  # what the runs start from: the base model, or the warm start
            rows.append(_evaluated_row("start", SFT_CHOICE if config.sft.enabled else BASE_CHOICE, run_dir, task,
                                       eval_count, eval_seed, eval_max_new_tokens))
        final = checkpoint_choices(run_dir)[-1]
        row = _evaluated_row(point.label, final, run_dir, task, eval_count, eval_seed, eval_max_new_tokens)
        row.update(run=run_dir.name, train_seconds=round(trained_s, 1))
        rows.append(row)
        if progress:
            print(format_table(rows), flush=True)
    record = {"name": name, "task": task, "eval_count": eval_count, "eval_seed": eval_seed, "rows": rows}
    Path(runs_root).mkdir(parents=True, exist_ok=True)
    (Path(runs_root) / f"{name}.sweep.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
    (Path(runs_root) / f"{name}.sweep.md").write_text(format_table(rows) + "\n", encoding="utf-8")
    return record


def _evaluated_row(label: str, choice: str, run_dir: Path, task: str, count: int, seed: int,
                   max_new_tokens: int | None) -> dict:
    from rft.evaluation import BASE_CHOICE, adapter_for
    from rft.models import load_for_inference
    from rft.runs import read_config

    adapter = adapter_for(run_dir, choice)
    model_config = read_config(run_dir).model
    model, tokenizer = load_for_inference(model_config.name_or_path, adapter=str(adapter) if adapter else None,
                                          load_in_4bit=model_config.load_in_4bit)
    evaluator = tasks.task(task).evaluator
    # A run that starts from an adapter (model.adapter: a warm start made earlier) starts from more than the base model.
    shown = f"model.adapter {adapter}" if choice == BASE_CHOICE and adapter else choice
    return summary_row(label, shown, evaluator, evaluator.evaluate(model, tokenizer, count, seed, max_new_tokens))


def summary_row(label: str, checkpoint: str, evaluator: tasks.Evaluator, summary: dict) -> dict:
    """One row of a table: an evaluation summary's headline rate, its interval and its outcomes."""
    metric, outcomes, paired = evaluator.headline(summary)
    successes, trials = sum(outcomes), len(outcomes)
    low, high = wilson_interval(successes, trials)
    return {"point": label, "checkpoint": checkpoint, "metric": metric, "successes": successes, "trials": trials,
            "rate": successes / trials if trials else math.nan, "low": low, "high": high,
            "outcomes": [int(outcome) for outcome in outcomes], "paired": paired}


def compare_evaluation_files(paths: list[str | Path]) -> str:
    """The table of saved evaluations (`python -m rft eval ... --out FILE.json`), each against the first.

    The files must be of one task and, for a paired change, of the same held-out items. A file may
    be gzipped (FILE.json.gz), as the README's committed Wordle evaluations are. Wordle files get a
    second table: each reward function's mean per turn (reward_means_table)."""
    rows, games = [], []
    for path in paths:
        summary = json.loads(gzip.decompress(Path(path).read_bytes()) if str(path).endswith(".gz")
                             else Path(path).read_text(encoding="utf-8"))
        task = "arithmetic" if "problems" in summary else "wordle"
        if rows and task != rows[0]["task"]:
            raise ValueError(f"{path}: a {task} evaluation cannot be compared with a {rows[0]['task']} one")
        if task == "arithmetic" and rows and [d["expression"] for d in summary["details"]] != rows[0]["items"]:
            raise ValueError(f"{path}: other problems than {paths[0]} (use the same --problems and --seed)")
        label = Path(path).name.removesuffix(".gz").removesuffix(".json")
        row = summary_row(label, summary.get("adapter") or "base model", tasks.task(task).evaluator, summary)
        row.update(task=task, items=[d.get("expression") for d in summary["details"]])
        rows.append(row)
        games.append(summary["details"])
    if rows[0]["task"] == "wordle":
        return format_table(rows) + "\n\n" + reward_means_table([row["point"] for row in rows], games)
    return format_table(rows)


def reward_means_table(labels: list[str], games: list[list[dict]]) -> str:
    """Markdown: each Wordle evaluation's mean reward per turn, function by function, with a 95%
    interval that resamples whole games (a game's turns follow from each other), and its change from
    the first evaluation, paired by secret when both played the same secrets."""
    def per_game(evaluation: list[dict], name: str) -> list[list[float]]:
        return [[turn["rewards"][name] for turn in game["turns"]] for game in evaluation]

    names = list(games[0][0]["turns"][0]["rewards"]) if games[0] and games[0][0]["turns"] else []
    lines = ["| point | reward function | mean per turn | 95% interval | change from start (95% interval) |",
             "|---|---|---:|---|---|"]
    for name in names:
        start = per_game(games[0], name)
        for label, evaluation in zip(labels, games, strict=True):
            clusters = per_game(evaluation, name)
            mean, low, high = cluster_bootstrap_mean(clusters)
            change = ""
            if evaluation is not games[0]:
                same_secrets = [game["secret"] for game in evaluation] == [game["secret"] for game in games[0]]
                if same_secrets:
                    change = "{:+.3f} ({:+.3f} to {:+.3f})".format(*paired_cluster_bootstrap_difference(start, clusters))
                else:
                    change = "other secrets: not paired"
            lines.append(f"| {label} | {name} | {mean:.3f} | {low:.3f} to {high:.3f} | {change} |")
    return "\n".join(lines)


def change_from_start(start: dict, row: dict) -> tuple[float, float, float]:
    """(row rate - start rate, low, high): paired over the same items where the task allows it."""
    if row["paired"] and len(row["outcomes"]) == len(start["outcomes"]):
        return paired_difference([bool(o) for o in start["outcomes"]], [bool(o) for o in row["outcomes"]])
    return difference_interval((start["successes"], start["trials"]), (row["successes"], row["trials"]))


def format_table(rows: list[dict]) -> str:
    """Markdown: each row's rate with its 95% interval, and its change from the first row (the start)."""
    timed = any("train_seconds" in row for row in rows)  # a sweep's runs; saved evaluations have no training time
    lines = ["| point | checkpoint | metric | rate | 95% interval | change from start (95% interval) | n |"
             + (" training time |" if timed else ""),
             "|---|---|---|---:|---|---|---:|" + ("---:|" if timed else "")]
    for row in rows:
        change = "" if row is rows[0] else "{:+.1%} ({:+.1%} to {:+.1%})".format(*change_from_start(rows[0], row))
        trained = f" {format_duration(row['train_seconds'])} |" if "train_seconds" in row else "  |" if timed else ""
        lines.append(f"| {row['point']} | {row['checkpoint']} | {row['metric']} | {row['rate']:.1%} | "
                     f"{row['low']:.1%} to {row['high']:.1%} | {change} | {row['trials']} |{trained}")
    return "\n".join(lines)
