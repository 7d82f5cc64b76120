"""The Train tab's logic, without Gradio: which fields the form has, how its values become a
RunConfig, and the checks and previews it shows before a launch.

The form is described once here (`HYPERPARAMETER_GROUPS`), so the UI builds its inputs from the
same list that `config_from_values` applies, and the help text sits next to the field it explains.
"""

from __future__ import annotations

import functools
import math
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from rft import data as datasets
from rft import sft, tasks
from rft.config import (IMPORTANCE_SAMPLING_LEVELS, LOSS_TYPES, LR_SCHEDULERS, MULTI_OBJECTIVE_AGGREGATIONS,
                        SCALE_REWARDS, TRACKERS, ConfigError, DataConfig, RunConfig)

UPLOADS_FOLDER = "uploads"
PREVIEW_ROWS = 5


@dataclass(frozen=True)
class FormField:
    path: str  # dotted RunConfig path, e.g. "sampling.num_generations"
    label: str
    help: str
    kind: str  # int | float | choice | multi (several of choices) | bool | text
    choices: tuple[str, ...] = ()
    optional: bool = False  # an empty input means None (the field's "off" or "automatic" value)

    @property
    def element_id(self) -> str:
        """A stable DOM id for the input, so tests and CSS can find it."""
        return "hp-" + self.path.replace(".", "-").replace("_", "-")


HYPERPARAMETER_GROUPS: dict[str, list[FormField]] = {
    "Sampling": [
        FormField("sampling.num_generations", "Completions per prompt (G)",
                  "GRPO compares the G completions of one prompt with each other; more gives a steadier "
                  "baseline but costs generation time. At least 2.", "int"),
        FormField("sampling.max_completion_length", "Max completion tokens",
                  "Longer answers are cut here (and count as truncated).", "int"),
        FormField("sampling.temperature", "Temperature",
                  "Sampling temperature; around 1.0 keeps the group diverse enough to learn from.", "float"),
        FormField("sampling.top_p", "Top-p", "Nucleus sampling; 1.0 disables it.", "float"),
        FormField("sampling.top_k", "Top-k", "Keep only the k most likely tokens; 0 disables it.", "int"),
    ],
    "GRPO": [
        FormField("grpo.beta", "KL weight (beta)",
                  "Pulls the policy towards the starting model; 0 skips the reference pass (faster).", "float"),
        FormField("grpo.use_bias_correction_kl", "KL bias correction",
                  "Weights each token's KL term by the probability ratio, so that its gradient is the unbiased "
                  "gradient of the KL to the reference (TRL's default since 1.16). Leave it on; turn it off to "
                  "match runs made without it. Matters only when the KL weight is above 0.", "bool"),
        FormField("grpo.epsilon_low", "Clip epsilon (low)", "PPO-style clipping of the probability ratio.", "float"),
        FormField("grpo.epsilon_high", "Clip epsilon (high)",
                  "Upper clip; empty uses the low value (DAPO uses 0.28).", "float", optional=True),
        FormField("grpo.num_iterations", "Passes per batch (mu)",
                  "Optimisation passes over each sampled batch; 1 is the usual choice.", "int"),
        FormField("grpo.loss_type", "Loss type",
                  "How token losses are averaged: grpo (per sequence), bnpo, dr_grpo, dapo; or another objective: "
                  "cispo (clipped ratio as a weight, needs Clip epsilon (high), e.g. 5) or sapo (a soft gate "
                  "instead of clipping). See GRPO variants.", "choice", LOSS_TYPES),
        FormField("grpo.scale_rewards", "Reward scaling",
                  "Divide advantages by the group's std (group), the whole step's, over every micro-batch "
                  "(batch), or not at all (none).",
                  "choice", SCALE_REWARDS),
        FormField("grpo.mask_truncated_completions", "Ignore truncated completions",
                  "Completions that hit the length limit do not contribute to the loss.", "bool"),
        FormField("grpo.dynamic_sampling", "Dynamic sampling (DAPO)",
                  "Groups whose completions all score the same teach nothing: drop them and draw more prompts "
                  "until each micro-batch has P groups with a reward spread. Use it when many groups are flat "
                  "(Monitor's 'no reward spread' chart); it costs extra generation.", "bool"),
        FormField("grpo.max_sampling_draws", "Draws per micro-batch (max)",
                  "With dynamic sampling: how many times to sample prompts for one micro-batch at most, the "
                  "first draw included; then the step goes on with what it found.", "int"),
    ],
    "GRPO variants": [
        FormField("grpo.importance_sampling_level", "Importance ratio",
                  "token: one probability ratio per token. sequence (GSPO): one per completion, the geometric mean "
                  "of its tokens' ratios; steadier when several passes per batch make ratios drift, and for long "
                  "completions. Works with loss type grpo or sapo.", "choice", IMPORTANCE_SAMPLING_LEVELS),
        FormField("grpo.delta", "Two-sided clip (delta)",
                  "Caps the ratio also for negative advantages, where clipping alone lets the loss grow without "
                  "bound. Use it with several passes per batch; above 1 + clip epsilon (high), e.g. 4. Empty: off.",
                  "float", optional=True),
        FormField("grpo.sapo_temperature_pos", "SAPO temperature (A > 0)",
                  "Loss type sapo only: how fast the gate closes as a token's ratio leaves 1 when its advantage is "
                  "positive. Higher is closer to hard clipping.", "float"),
        FormField("grpo.sapo_temperature_neg", "SAPO temperature (A ≤ 0)",
                  "Loss type sapo only: the same for non-positive advantages; slightly higher by default, since "
                  "pushing probabilities down is the less stable direction.", "float"),
        FormField("grpo.top_entropy_quantile", "Train on top-entropy tokens",
                  "Only the tokens whose entropy is in this top fraction of the batch count in the policy loss "
                  "(the KL still covers every token); 0.2 trains on the 'forking' tokens where the model hesitates. "
                  "1.0 keeps every token.", "float"),
        FormField("grpo.entropy_coef", "Entropy bonus",
                  "Subtracts this times the mean token entropy from the loss, to keep sampling diverse when groups "
                  "collapse to identical completions (watch the entropy chart). Costs memory: the full softmax is "
                  "kept for the backward pass. 0 is off; try 0.001 to 0.01.", "float"),
        FormField("grpo.multi_objective_aggregation", "Combine reward functions",
                  "sum_then_normalize: weighted sum of the raw rewards, then the group advantage. "
                  "normalize_then_sum (GDPO): each function normalised within its group first, so one with a wide "
                  "range cannot drown the others; the sum is then standardised over the whole step, whatever "
                  "Reward scaling says.", "choice", MULTI_OBJECTIVE_AGGREGATIONS),
    ],
    "Optimisation": [
        FormField("optim.learning_rate", "Learning rate", "LoRA adapters train well around 1e-5 to 1e-4.", "float"),
        FormField("optim.lr_scheduler", "LR schedule", "How the learning rate changes over the run.",
                  "choice", LR_SCHEDULERS),
        FormField("optim.warmup_steps", "Warm-up steps", "Steps over which the learning rate ramps up from 0, whatever the schedule.", "int"),
        FormField("optim.weight_decay", "Weight decay", "AdamW weight decay.", "float"),
        FormField("optim.max_grad_norm", "Max gradient norm", "Gradients are clipped to this norm.", "float"),
        FormField("optim.prompts_per_step", "Prompts per micro-batch (P)",
                  "Prompts sampled together; memory grows with P x G.", "int"),
        FormField("optim.gradient_accumulation_steps", "Accumulation steps",
                  "Micro-batches per optimiser step: a larger batch without more memory.", "int"),
    ],
    "LoRA": [
        FormField("lora.rank", "Rank", "Adapter rank; 8 to 32 is typical for small models.", "int"),
        FormField("lora.alpha", "Alpha", "Adapter scaling; often twice the rank.", "int"),
        FormField("lora.dropout", "Dropout", "Dropout on the adapter input.", "float"),
        FormField("lora.target_modules", "Target modules",
                  "'all-linear', or comma-separated module names such as q_proj,v_proj.", "text"),
        FormField("model.gradient_checkpointing", "Gradient checkpointing",
                  "Recompute each layer's activations in the backward pass instead of keeping them: much less "
                  "memory for long completions or large models, about a third more training time. The shared "
                  "prompt still runs once per group.", "bool"),
        FormField("model.load_in_4bit", "4-bit base model (QLoRA)",
                  "Load the frozen base model's weights in 4-bit NF4 (bitsandbytes) and train the adapter on top: "
                  "about a quarter of the weights' memory, so a 7B model fits a 24 GB GPU. Slower than full "
                  "precision, on a CPU especially; a merged export uses the unquantised base.", "bool"),
    ],
    "Schedule": [
        FormField("schedule.max_steps", "Max steps", "Optimiser steps to train for.", "int"),
        FormField("schedule.epochs", "Epochs", "When set, replaces max steps with passes over the dataset.",
                  "float", optional=True),
        FormField("schedule.save_every", "Checkpoint every", "Steps between checkpoints; 0 saves only at the end. "
                  "Stop and resume continue from the last checkpoint.", "int"),
        FormField("schedule.seed", "Seed", "Seeds sampling and data order; the same seed repeats a run.", "int"),
        FormField("data.max_prompt_length", "Max prompt tokens", "Longer prompts are left out (and logged).", "int"),
        FormField("data.limit", "Use first N rows", "Empty uses the whole dataset.", "int", optional=True),
        FormField("data.task_size", "Task questions",
                  "For a reasoning-gym dataset (rg:...): how many questions to generate for training.", "int"),
        FormField("data.task_seed", "Task seed",
                  "For a reasoning-gym dataset: the seed its questions are generated with (held-out questions "
                  "come from a seed of their own).", "int"),
        FormField("data.eval_size", "Held-out rows",
                  "Rows kept out of training to evaluate on, with the run's reward functions (a fixed choice of "
                  "a file's rows; Wordle's and arithmetic's own held-out items). 0 holds out nothing.", "int"),
        FormField("report.to", "Report to",
                  "Also mirror the run's metrics, completions and config to these trackers (the run directory "
                  "stays the source of truth). TensorBoard writes into the run directory; trackio to its local "
                  "store (`trackio show --project rft`).", "multi", TRACKERS),
        FormField("schedule.eval_every", "Evaluate every",
                  "Steps between greedy evaluations on the held-out rows (also before the first step and at the "
                  "end), charted in Monitor. 0: none. Each costs one generation pass over the held-out rows.", "int"),
    ],
    "Environment": [
        FormField("environment.max_turns", "Max turns",
                  "Model replies per episode at most; an environment still answering after the last one cuts the "
                  "episode (truncated). Each reply is at most 'Max completion tokens'.", "int"),
        FormField("environment.max_episode_tokens", "Max episode tokens",
                  "Model and environment tokens after the prompt, at most; the episode is cut (truncated) there.",
                  "int"),
        FormField("environment.timeout_s", "Environment timeout (s)",
                  "Per call of reset, step or reward; a call over it, or one that raises, fails its episode (scored "
                  "as missing, logged) and the run goes on.", "float"),
        FormField("environment.reward_weight", "Environment reward weight",
                  "Weight of the environment's own reward() in the total, scored and charted as 'environment'.",
                  "float"),
        FormField("environment.class_name", "Environment class",
                  "Which class to play, when the code defines several; empty: the only one.", "text", optional=True),
    ],
    "SFT warm start": [
        FormField("sft.enabled", "Warm start with SFT",
                  "Before GRPO, train the adapter on worked demonstrations (Wordle: the solver's guesses "
                  "explained; arithmetic: worked sums; a dataset file: its 'completion' column). GRPO then "
                  "continues from it, with it as the KL reference. Small models learn far more this way.", "bool"),
        FormField("sft.examples", "Demonstrations", "How many dataset rows get a demonstration.", "int"),
        FormField("sft.epochs", "SFT epochs", "Passes over the demonstrations.", "float"),
        FormField("sft.learning_rate", "SFT learning rate", "Higher than GRPO's: 2e-4 to 1e-3 for LoRA.", "float"),
        FormField("sft.batch_size", "SFT batch size", "Demonstrations per optimiser step.", "int"),
        FormField("sft.max_length", "SFT max tokens", "Prompt + demonstration; longer ones are left out.", "int"),
    ],
}

ALL_FIELDS: list[FormField] = [f for fields in HYPERPARAMETER_GROUPS.values() for f in fields]
# Shown in one row above the launch summary; every other field waits in the collapsed groups, so the
# tab's essentials fit one screen.
ESSENTIAL_FIELDS = ("sampling.num_generations", "sampling.max_completion_length", "sampling.temperature",
                    "optim.prompts_per_step", "optim.learning_rate", "grpo.beta", "schedule.max_steps", "sft.enabled")
BATCH_FIELDS = ("sampling.num_generations", "sampling.max_completion_length", "optim.prompts_per_step",
                "optim.gradient_accumulation_steps", "schedule.max_steps")


def get_path(config: RunConfig, path: str):
    node = config
    for part in path.split("."):
        node = getattr(node, part)
    return node


def field_values(config: RunConfig) -> list:
    """The config's value of every hyperparameter field, in ALL_FIELDS order."""
    return [get_path(config, f.path) for f in ALL_FIELDS]


def config_from_values(base: RunConfig, values: dict[str, object]) -> RunConfig:
    """`base` with the form's values (dotted path -> value) applied; raises ConfigError naming bad fields.

    Types are checked here, ranges by `RunConfig.problems()` (the caller shows both the same way).
    """
    data = base.to_dict()
    optional = {f.path for f in ALL_FIELDS if f.optional}
    number_kinds = {f.path: f.kind for f in ALL_FIELDS if f.kind in ("int", "float")}
    problems = []  # every bad field at once, with those RunConfig.from_dict finds
    for path, value in values.items():
        if isinstance(value, str) and path != "rewards.source":
            value = value.strip()
        if value in ("", None) and path in optional:
            value = None
        if path in number_kinds and value is not None:
            try:
                value = _form_number(path, value, number_kinds[path])
            except ConfigError as exc:
                problems.extend(exc.problems)
                continue
        node = data
        *sections, key = path.split(".")
        for section in sections:
            node = node[section]
        node[key] = value
    try:
        config = RunConfig.from_dict(data)
    except ConfigError as exc:
        problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    return config


def _form_number(path: str, value: object, kind: str) -> object:
    """A number input's value: an optional field's text parsed, and a fraction in a whole-number
    field refused (never rounded: 2.5 completions per prompt is a mistake to point out)."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ConfigError([f"{path}: expected a number, got {value!r}"]) from None
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError([f"{path}: expected a finite number"])
    if kind == "int" and isinstance(value, float):
        if not value.is_integer():
            raise ConfigError([f"{path}: expected a whole number, got {value:g}"])
        return int(value)
    return value


def effective_batch_summary(config: RunConfig) -> str:
    """One line a person can check the batch arithmetic against, plus warnings that cost runs."""
    s, o = config.sampling, config.optim
    prompts = o.prompts_per_step * o.gradient_accumulation_steps
    completions = config.completions_per_step
    lines = [
        f"**Effective batch:** {o.prompts_per_step} prompt(s) x {s.num_generations} completions x "
        f"{o.gradient_accumulation_steps} accumulation = **{completions} completions per step** "
        f"({prompts} prompt group(s)); up to {completions * s.max_completion_length:,} generated tokens per step."
    ]
    if config.schedule.epochs:
        lines.append(f"Trains for {config.schedule.epochs:g} epoch(s) of the dataset.")
    else:
        lines.append(f"{config.schedule.max_steps} steps: {config.schedule.max_steps * prompts:,} prompts seen.")
    if 2 <= s.num_generations < 4:
        lines.append("Few completions per group: many groups will have identical rewards and teach nothing.")
    return "  \n".join(lines)


# The "Quick try" button: a run of a minute or two that shows the whole loop working and measures
# this machine's speed for the estimate, before an hour-long launch.
QUICK_TRY = {"schedule.max_steps": 3, "schedule.save_every": 3, "sft.examples": 16, "schedule.eval_every": 0}
ESTIMATE_FIELDS = ("sft.enabled", "sft.examples", "sft.epochs", "schedule.max_steps")


def launch_summary(config: RunConfig, runs_root: str | Path) -> str:
    """The effective batch, and how long the run will take here (from earlier runs' measured speed)."""
    from rft.estimate import estimate_run

    estimate = estimate_run(config, runs_root)
    timing = estimate.describe() if estimate else (
        "**Estimated time:** no earlier run of this model on this machine to measure from. *Quick try* sets a "
        "3-step run (16 demonstrations when the SFT warm start is on) that measures it in a minute or two.")
    return effective_batch_summary(config) + "  \n" + timing


def cli_command(config_path: str | Path) -> str:
    """The shell command that trains this config again, without the dashboard, as a new run."""
    return shlex.join(["python", "-m", "rft", "train", "--config", str(config_path)])


def store_upload(uploaded: str | Path, runs_root: str | Path) -> Path:
    """Copy an uploaded dataset next to the runs, so a run still finds it after the upload cache is cleared."""
    source = Path(uploaded)
    folder = Path(runs_root) / UPLOADS_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / source.name
    counter = 1
    while target.exists() and target.read_bytes() != source.read_bytes():
        target = folder / f"{source.stem}-{counter}{source.suffix}"
        counter += 1
    if not target.exists():
        shutil.copyfile(source, target)
    return target


@dataclass
class DatasetPreview:
    rows: list[dict]  # the first rows, as loaded (reward previews score against them)
    frame: pd.DataFrame  # what the preview table shows
    message: str  # validation result, in words
    has_demonstrations: bool = False  # an SFT warm start can run on it


def preview_dataset(data: DataConfig, count: int = PREVIEW_ROWS, model: str | None = None) -> DatasetPreview:
    """The first rows of a dataset and whether it is usable; never raises for a bad dataset. With a
    model, each prompt is shown as that model sees it (its chat template) with its length in tokens."""
    try:
        rows = datasets.load_rows(data)
    except datasets.DatasetError as exc:
        return DatasetPreview([], pd.DataFrame(), f"Dataset problem: {exc}")
    except Exception as exc:  # a preset whose generator is broken or missing
        return DatasetPreview([], pd.DataFrame(), f"Dataset could not be loaded: {type(exc).__name__}: {exc}")
    source = Path(data.path).name if data.path else f"preset '{data.preset}'"
    columns = sorted({key for row in rows[:count] for key in row})
    passed = sorted({key for row in rows[:count] for key in datasets.example_of(row, data)})
    message = (f"{source}: {len(rows):,} rows, columns: {', '.join(columns)}. The prompt is {data.prompt_column!r}; "
               f"reward functions receive {', '.join(passed) or 'no other column'} as example.")
    frame = datasets.preview_frame(rows, data, count)
    if model:
        message += " " + _show_as_the_model_sees(frame, rows[:count], data, model)
    return DatasetPreview(rows[:count], frame, message, has_demonstrations(data, rows))


def _show_as_the_model_sees(frame: pd.DataFrame, rows: list[dict], data: DataConfig, model: str) -> str:
    """Replaces the frame's prompts with their rendering by the model's chat template and adds their
    token counts; returns what the message should add (over-long prompts, or why it could not)."""
    try:
        tokenizer = _tokenizer(model)
        texts = [datasets.render_prompt(tokenizer, datasets.to_messages(row, data)) for row in rows]
    except Exception as exc:  # a model without a tokenizer or a chat template: the plain preview stays
        return f"(The prompts are shown as messages: {model}'s chat template could not render them: {exc})"
    counts = [len(tokenizer(text, add_special_tokens=False).input_ids) for text in texts]
    frame["prompt"] = texts
    frame.insert(1, "tokens", counts)
    over = sum(count > data.max_prompt_length for count in counts)
    shown = "Prompts are shown as the model sees them (its chat template), with their length in tokens."
    if over:
        shown += (f" {over} of these {len(counts)} are over data.max_prompt_length={data.max_prompt_length} "
                  "and would be left out: raise Max prompt tokens.")
    return shown


@functools.lru_cache(maxsize=4)
def _tokenizer(model: str):
    from rft import models

    return models.load_tokenizer(model)


def has_demonstrations(data: DataConfig, rows: list[dict]) -> bool:
    """Whether an SFT warm start can run on this dataset (a preset generator or a completion column)."""
    try:
        sft.demonstration_source(data, rows)
    except datasets.DatasetError:
        return False
    return True


def recipe_for(dataset_choice: str) -> RunConfig | None:
    """The recipe (reward code, environment and hyperparameters) of a built-in dataset's task."""
    task = tasks.task(dataset_choice)
    return task.recipe() if task is not None else None


def is_untouched_recipe_code(source: str) -> bool:
    """Whether reward code is exactly some recipe's own, unedited: it belongs to that recipe's
    dataset, so choosing another dataset may replace it without losing anything the user wrote."""
    from rft.tasks import reasoning_gym

    recipes = [make().rewards.source for make in tasks.recipes().values()] + [reasoning_gym.reward_source()]
    return any(source.strip() == recipe.strip() for recipe in recipes)


def weights_table(functions, weights: dict[str, float]) -> pd.DataFrame:
    """One row per reward function found by a check, with its current weight (editable in the UI)."""
    return pd.DataFrame(
        [[f.name, f.convention.replace("_", "-"), weights.get(f.name, 1.0), f.summary] for f in functions],
        columns=["function", "convention", "weight", "description"],
    )


def weights_from_table(table: pd.DataFrame | None) -> dict[str, float]:
    """The weights typed into the table; raises ValueError naming a weight that is not a number.

    Only weights other than 1.0 are kept, so a config stays valid when a function is renamed.
    """
    if table is None or len(table) == 0 or "function" not in table:
        return {}
    weights = {}
    for name, raw in zip(table["function"], table["weight"]):
        name = str(name).strip()
        if not name:
            continue
        try:
            weight = float(raw)
        except (TypeError, ValueError):
            raise ValueError(f"the weight of {name} must be a number, got {raw!r}") from None
        if not math.isfinite(weight):
            raise ValueError(f"the weight of {name} must be a finite number")
        if weight != 1.0:
            weights[name] = weight
    return weights


def sample_completions(rows: list[dict], pasted: str) -> list[str]:
    """What Try scores for each preview row: the pasted completion, else the row's own `completion`."""
    if pasted.strip():
        return [pasted] * len(rows)
    return [str(row.get("completion", "")) for row in rows]


def missing_key_warnings(source: str, rows: list[dict], data: DataConfig) -> list[str]:
    """Reward functions that read `example` keys the dataset's rows do not have (none without rows)."""
    from rft import rewards

    if not rows:
        return []
    return rewards.missing_example_keys(source, {key for row in rows for key in datasets.example_of(row, data)})


def try_rewards(source: str, weights: dict[str, float], rows: list[dict], data: DataConfig,
                pasted: str, timeout_s: float) -> tuple[pd.DataFrame, str, str]:
    """Score sample completions of the preview rows with the reward code: a table, a message and
    its kind (ok; warn when a function raised on some row; error when nothing could be scored)."""
    from rft import rewards

    if not rows:
        return pd.DataFrame(), "No preview rows to score: choose a dataset first.", "error"
    completions = sample_completions(rows, pasted)
    if not any(c.strip() for c in completions):
        return pd.DataFrame(), "Paste a completion to score (the dataset has no `completion` column).", "error"
    prompts = [datasets.prompt_text_for_display(datasets.to_messages(row, data)) for row in rows]
    examples = [datasets.example_of(row, data) for row in rows]
    check, scores = rewards.preview(source, prompts, completions, examples, weights or None, timeout_s)
    if scores is None:
        return pd.DataFrame(), check.message(), "error"
    frame = scores.to_dataframe().round(4)
    frame.insert(0, "prompt", [_shorten(p, 60) for p in prompts])
    frame.insert(1, "completion", [_shorten(c, 60) for c in completions])
    message = f"Scored {len(completions)} completion(s) in {scores.seconds:.2f} s."
    key_warnings = missing_key_warnings(source, rows, data)
    if key_warnings:
        message += "\n" + "\n".join(key_warnings)
    if scores.errors:
        message += "\n" + "\n".join(
            f"{name} failed on {errors.count} of {len(completions)}: {errors.first_message.strip().splitlines()[-1]}"
            for name, errors in scores.errors.items())
        message += "\nThose scores are missing (a run logs and skips them); the error column shows each row's."
    printed = [f"{name}: {text.strip()}" for name, text in scores.logs if text.strip()]
    if printed:
        message += "\nPrinted:\n" + "\n".join(printed[:20])
    return frame, message, "warn" if scores.errors or key_warnings else "ok"


def try_episode(config: RunConfig, row: dict) -> tuple[dict | None, str, str]:
    """One episode of the configured environment with the configured model, on a preview row, scored
    as a run scores it: (the episode's summary with its prompt and scores), a message and its kind.
    Sampled at the configured temperature, so playing again plays another episode."""
    import contextlib
    import dataclasses

    from rft import models
    from rft.environments import episodes
    from rft.environments.runtime import EnvironmentCodeError, EnvironmentRuntime
    from rft.rewards import RewardCodeError, RewardRuntime

    if not config.environment.enabled:
        return None, "Write an environment first (or choose Environment episodes).", "error"
    with contextlib.ExitStack() as stack:
        try:
            environment = stack.enter_context(EnvironmentRuntime(
                config.environment.source, config.environment.class_name, config.environment.timeout_s))
            rewards = stack.enter_context(RewardRuntime(config.rewards.source, config.rewards.weights,
                                                        config.rewards.timeout_s))
        except (EnvironmentCodeError, RewardCodeError) as exc:
            return None, f"Cannot play: {exc}", "error"
        model, tokenizer = models.load_for_inference(config.model.name_or_path, config.model.adapter,
                                                     config.model.device, config.model.load_in_4bit)
        example = datasets.example_of(row, config.data)
        one = dataclasses.replace(config.sampling, num_generations=1)
        batch = episodes.play(model, tokenizer, [datasets.to_messages(row, config.data)], [example], one,
                              config.environment, environment)
        episode = batch.episodes[0]
        scored = episodes.score_episodes(rewards, batch.prompt_texts, [episode], [example], environment.has_reward,
                                         config.environment.reward_weight)
    played = {**episode.summary(), "prompt": datasets.prompt_text_for_display(batch.prompt_messages[0]),
              "rewards": {name: values[0] for name, values in scored.per_function.items()}}
    if episode.problem:
        return played, f"The environment failed, so the episode would be scored as missing: {episode.problem}", "error"
    ending = "cut by a limit (truncated)" if episode.truncated else "ended by the environment"
    message = (f"{episode.turns} turn(s), {sum(episode.model_mask)} model tokens, {ending}; generated in "
               f"{batch.generate_seconds:.1f} s, the environment took {batch.environment_seconds:.2f} s.")
    if scored.row_errors[0]:
        return played, f"{message}\nA reward function failed on it: {scored.row_errors[0]}", "warn"
    return played, message, "ok"


def _shorten(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
