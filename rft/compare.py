"""Compare policies on one prompt: generate from two of them with the same seed and sampling
settings (for a run played in an environment, play its episodes) and score both sides with a run's
reward functions; or put side by side what one run wrote for the same prompt at two training steps
(from rollouts.jsonl, nothing generated).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rft import data as datasets
from rft.config import RunConfig, SamplingConfig
from rft.environments.runtime import EnvironmentRuntime
from rft.grpo.sampler import sample_group
from rft.policies import Policy, PolicyCache
from rft.rewards import RewardRuntime
from rft.runs import read_all_rollouts, read_rollouts

DEFAULT_COMPLETIONS = 4
DEFAULT_MAX_NEW_TOKENS = 96  # CPU generation is slow; a few sentences show the difference
DATASET_PROMPTS_SHOWN = 50
MAX_COMPLETIONS = 16


class CompareError(ValueError):
    """A comparison that cannot run; the message says what to change."""


@dataclass
class PromptChoice:
    label: str  # what a person reads in the picker
    messages: list[dict]  # chat messages, rendered with each policy's own tokenizer
    example: dict  # the row's other columns: what reward functions receive


@dataclass
class SideResult:
    """One column of a comparison: completions with every reward function's score and the total."""

    title: str
    completions: list[str]
    scores: dict[str, list[float]]  # per reward function, NaN where missing
    totals: list[float]
    problems: list[str] = field(default_factory=list)  # per completion: what a reward function raised, or ""

    @property
    def mean_total(self) -> float:
        scored = [total for total in self.totals if not math.isnan(total)]  # NaN: no function could score it
        return sum(scored) / len(scored) if scored else math.nan

    def rows(self) -> list[dict]:
        """One row per completion, for a table."""
        return [
            {"#": index + 1, "completion": text, **{name: values[index] for name, values in self.scores.items()},
             "total": self.totals[index]}
            for index, text in enumerate(self.completions)
        ]


@dataclass
class GenerationSettings:
    num_completions: int = DEFAULT_COMPLETIONS
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0

    @classmethod
    def from_run(cls, config: RunConfig, **overrides) -> GenerationSettings:
        """The run's own sampling settings, with fewer and shorter completions unless overridden."""
        sampling = config.sampling
        settings = cls(temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k,
                       max_new_tokens=min(sampling.max_completion_length, DEFAULT_MAX_NEW_TOKENS))
        for name, value in overrides.items():
            setattr(settings, name, value)
        return settings

    def problems(self) -> list[str]:
        found = []
        if not 1 <= self.num_completions <= MAX_COMPLETIONS:
            found.append(f"completions: must be between 1 and {MAX_COMPLETIONS}")
        if not 1 <= self.max_new_tokens <= 4096:
            found.append("max new tokens: must be between 1 and 4096")
        if not (math.isfinite(self.temperature) and 0 < self.temperature <= 10):
            found.append("temperature: must be in (0, 10]")
        if not 0 < self.top_p <= 1:
            found.append("top-p: must be in (0, 1]")
        if self.top_k < 0:
            found.append("top-k: must be 0 (off) or positive")
        if not 0 <= self.seed < 2**32:
            found.append("seed: must be in [0, 2**32)")
        return found


# ---- prompts ---------------------------------------------------------------------------------------

def dataset_prompts(config: RunConfig, limit: int = DATASET_PROMPTS_SHOWN) -> list[PromptChoice]:
    """The first `limit` prompts of the run's dataset (its file or preset)."""
    try:
        rows = datasets.load_rows(config.data)[:limit]
    except (datasets.DatasetError, OSError) as exc:
        raise CompareError(f"the run's dataset cannot be read: {exc}") from None
    choices = []
    for number, row in enumerate(rows, start=1):
        messages = datasets.to_messages(row, config.data)
        text = " ".join(datasets.prompt_text_for_display(messages).split())
        choices.append(PromptChoice(f"{number}. {text[:110]}", messages, datasets.example_of(row, config.data)))
    return choices


def typed_prompt(text: str, config: RunConfig) -> PromptChoice:
    """A prompt a person typed, framed like the run's own prompts (system prompt, answer prefix).

    It has no dataset columns, so reward functions that read `example` may score it as missing.
    """
    if not text or not text.strip():
        raise CompareError("Type a prompt, or pick one from the dataset.")
    messages = datasets.to_messages({config.data.prompt_column: text.strip()}, config.data)
    return PromptChoice(text.strip()[:110], messages, {})


# ---- generate and score ------------------------------------------------------------------------------

def generate(model, tokenizer, messages: list[dict], settings: GenerationSettings) -> list[str]:
    """`settings.num_completions` samples for one prompt; the same seed gives every policy the same
    random numbers, so differences come from the policies."""
    prompt_text = datasets.render_prompt(tokenizer, messages)
    sampling = SamplingConfig(num_generations=settings.num_completions, max_completion_length=settings.max_new_tokens,
                              temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k)
    torch.manual_seed(settings.seed)
    return sample_group(model, tokenizer, [prompt_text], sampling).completions


def score(runtime: RewardRuntime, prompt_text: str, completions: list[str], example: dict, title: str) -> SideResult:
    result = runtime.score([prompt_text] * len(completions), completions, [example] * len(completions))
    return SideResult(title, completions, result.per_function, result.total, result.row_errors)


def play(model, tokenizer, prompt: PromptChoice, config: RunConfig, settings: GenerationSettings, rewards,
         environment, title: str) -> SideResult:
    """`settings.num_completions` episodes from one prompt in the run's environment, scored as the run
    scores them; each shown as its conversation."""
    from rft.environments import episodes
    from rft.monitoring import episode_transcript

    sampling = SamplingConfig(num_generations=settings.num_completions, max_completion_length=settings.max_new_tokens,
                              temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k)
    torch.manual_seed(settings.seed)
    batch = episodes.play(model, tokenizer, [prompt.messages], [prompt.example], sampling, config.environment,
                          environment)
    scored = episodes.score_episodes(rewards, batch.prompt_texts * len(batch.episodes), batch.episodes,
                                     [prompt.example] * len(batch.episodes), environment.has_reward,
                                     config.environment.reward_weight)
    return SideResult(title, [episode_transcript(e.messages) for e in batch.episodes], scored.per_function,
                      scored.totals, scored.row_errors)


def compare_policies(cache: PolicyCache, policies: list[Policy], prompt: PromptChoice, config: RunConfig,
                     settings: GenerationSettings, on_side: Callable[[str], None] | None = None) -> list[SideResult]:
    """Each policy's completions for `prompt` (its episodes, for a run played in an environment),
    scored with `config`'s reward functions; `on_side(text)` hears which side is being generated."""
    problems = settings.problems()
    if problems:
        raise CompareError("; ".join(problems))
    results = []
    with contextlib.ExitStack() as stack:
        runtime = stack.enter_context(RewardRuntime(config.rewards.source, config.rewards.weights,
                                                    config.rewards.timeout_s))
        environment = None
        if config.environment.enabled:
            environment = stack.enter_context(EnvironmentRuntime(
                config.environment.source, config.environment.class_name, config.environment.timeout_s))
        for index, policy in enumerate(policies):
            if on_side is not None:
                on_side(f"policy {chr(ord('A') + index)} ({policy.label})")
            model, tokenizer = cache.load(policy)
            if environment is not None:
                results.append(play(model, tokenizer, prompt, config, settings, runtime, environment, policy.label))
                continue
            completions = generate(model, tokenizer, prompt.messages, settings)
            prompt_text = datasets.render_prompt(tokenizer, prompt.messages)
            results.append(score(runtime, prompt_text, completions, prompt.example, policy.label))
    return results


# ---- the same prompt at two training steps -------------------------------------------------------------

@dataclass
class StoredPrompt:
    text: str  # the full prompt, chat template applied: what identifies it across steps
    label: str  # its last user message, for people
    steps: list[int]  # the steps it was rolled out at


def prompts_across_steps(run_dir: str | Path) -> list[StoredPrompt]:
    """Every prompt the run rolled out, prompts seen at the most steps first."""
    found: dict[str, StoredPrompt] = {}
    for record in read_all_rollouts(run_dir):
        for group in record.get("groups", []):
            text = _prompt_key(group)
            stored = found.setdefault(text, StoredPrompt(text, " ".join(str(group.get("prompt", text)).split()), []))
            if record.get("step") not in stored.steps:
                stored.steps.append(record.get("step"))
    return sorted(found.values(), key=lambda stored: -len(stored.steps))


def _prompt_key(group: dict) -> str:
    return group.get("prompt_text") or group.get("prompt", "")


def rollouts_at_step(run_dir: str | Path, step: int, prompt_text: str) -> SideResult:
    """What the run wrote for `prompt_text` at `step`, with the scores it got then."""
    record = read_rollouts(run_dir, step)
    if record is None:
        raise CompareError(f"step {step} has no rollouts")
    groups = [group for group in record.get("groups", []) if _prompt_key(group) == prompt_text]
    if not groups:
        raise CompareError(f"this prompt was not rolled out at step {step}")
    completions, totals, scores = [], [], {}
    for group in groups:
        if group.get("episodes"):
            from rft.monitoring import episode_transcript

            completions += [episode_transcript(episode["messages"]) for episode in group["episodes"]]
        else:
            completions += group["completions"]
        totals.extend(math.nan if total is None else total for total in group["total"])
        for name, values in group["rewards"].items():
            scores.setdefault(name, []).extend(math.nan if value is None else value for value in values)
    return SideResult(f"step {step}", completions, scores, totals)
