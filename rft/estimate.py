"""How long a run will take on this machine, before it is launched: from what earlier runs measured.

A GRPO step's time grows with the tokens it generates and trains on, so earlier runs of the same
model give seconds per completion token (their `time/step` over completions x mean completion
length), scaled here to the new config's batch; their completion lengths, as a share of their
limit, say how much of the new limit answers are likely to use (from a run on the same dataset
when there is one). The SFT warm start's time comes from seconds per demonstration measured by
earlier warm starts of the same model. Without an earlier run there is no estimate, and the Train
tab says so: a quick try (a few steps) measures one in a minute or two.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from rft.config import RunConfig
from rft.monitoring import change_signature, format_duration
from rft.runs import list_runs, read_config, read_metrics, read_sft_metrics

RECENT_STEPS = 10  # a run's last steps: its speed once warmed up


@dataclass(frozen=True)
class Estimate:
    grpo_s: float
    sft_s: float | None  # None: no SFT warm start in the config
    source: str  # the run the speed was measured on

    @property
    def total_s(self) -> float:
        return self.grpo_s + (self.sft_s or 0.0)

    def describe(self) -> str:
        parts = f" (SFT warm start {format_duration(self.sft_s)}, GRPO {format_duration(self.grpo_s)})" \
            if self.sft_s else ""
        return f"**Estimated time on this machine:** about {format_duration(self.total_s)}{parts}, from the speed " \
               f"run {self.source} measured."


@dataclass(frozen=True)
class _Measured:
    run_id: str
    model: tuple[str, str]  # (name_or_path, device): speeds of another model or device say nothing
    dataset: tuple[str | None, str | None]  # (preset, path)
    seconds_per_token: float  # a step's seconds per completion token generated and trained
    length_share: float  # mean completion length / its limit
    sft_seconds_per_example: float | None


def estimate_run(config: RunConfig, runs_root: str | Path) -> Estimate | None:
    """The estimate for `config` from the most relevant earlier run of its model; None without one."""
    model = (config.model.name_or_path, config.model.device)
    measured = [m for m in (_measure(run.run_id, run.run_dir, change_signature(run.run_dir))
                            for run in list_runs(runs_root)) if m and m.model == model]
    if not measured:
        return None
    dataset = (config.data.preset, config.data.path)
    best = next((m for m in measured if m.dataset == dataset), measured[0])  # newest first
    length = config.sampling.max_completion_length * best.length_share
    steps = config.schedule.max_steps
    grpo_s = steps * config.completions_per_step * length * best.seconds_per_token
    sft_s = None
    if config.sft.enabled:
        per_example = next((m.sft_seconds_per_example for m in measured if m.sft_seconds_per_example), None)
        sft_s = per_example * config.sft.examples * config.sft.epochs if per_example else None
    return Estimate(grpo_s, sft_s, best.run_id)


# The Train tab asks again at every field change: a run's files are read again only when they changed.
@functools.lru_cache(maxsize=256)
def _measure(run_id: str, run_dir: Path, signature: tuple) -> _Measured | None:
    try:
        earlier = read_config(run_dir)
    except Exception:  # a run whose config cannot be read measures nothing
        return None
    metrics = read_metrics(run_dir)
    needed = ("time/step", "completion_length/mean")
    if metrics.empty or any(column not in metrics for column in needed):
        return None
    recent = metrics.tail(RECENT_STEPS)
    completions = earlier.completions_per_step
    if "dynamic_sampling/sampled_groups" in recent:  # it also generated the groups it dropped
        completions = pd.to_numeric(recent["dynamic_sampling/sampled_groups"], errors="coerce").fillna(
            earlier.optim.prompts_per_step) * earlier.sampling.num_generations
    tokens = completions * pd.to_numeric(recent["completion_length/mean"], errors="coerce")
    per_token = (pd.to_numeric(recent["time/step"], errors="coerce") / tokens).dropna()
    if per_token.empty:
        return None
    length_share = float(recent["completion_length/mean"].mean()) / earlier.sampling.max_completion_length
    sft = read_sft_metrics(run_dir)
    sft_per_example = None
    if not sft.empty and "time/step" in sft:
        sft_per_example = float(pd.to_numeric(sft["time/step"], errors="coerce").mean()) / earlier.sft.batch_size
    return _Measured(run_id, (earlier.model.name_or_path, earlier.model.device),
                     (earlier.data.preset, earlier.data.path), float(per_token.median()), min(1.0, length_share),
                     sft_per_example)
