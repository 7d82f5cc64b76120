"""The run configuration: every knob of a GRPO run, its YAML form, and its validation.

A `RunConfig` is what the Train tab builds, what `config.yaml` in a run directory holds, and what
`python -m rft train` reads. Validation returns messages that name the field and say how to fix
it, so the UI and the CLI can show them as they are.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

BUNDLED_MODEL = "bundled:SmolLM2-135M-Instruct"
LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo")
SCALE_REWARDS = ("group", "batch", "none")
IMPORTANCE_SAMPLING_LEVELS = ("token", "sequence")
MULTI_OBJECTIVE_AGGREGATIONS = ("sum_then_normalize", "normalize_then_sum")
# Loss types that sum token losses over the batch: at sequence level each sequence's one ratio then
# counts once per token, weighting sequences by length instead of GSPO's per-sequence objective.
TOKEN_SUM_LOSS_TYPES = ("bnpo", "dr_grpo", "dapo", "cispo")
CLIPPED_LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
LR_SCHEDULERS = ("constant", "linear", "cosine")
MAX_COMPLETIONS_PER_MICRO_BATCH = 16384
QLORA_INSTALL = "install it with: .venv/bin/python -m pip install -r requirements-qlora.txt -c requirements.txt"


class ConfigError(ValueError):
    """A configuration that cannot run; `problems` lists one message per bad field."""

    def __init__(self, problems: list[str]):
        super().__init__("Invalid configuration:\n" + "\n".join(f"- {p}" for p in problems))
        self.problems = problems


@dataclass
class ModelConfig:
    name_or_path: str = BUNDLED_MODEL
    adapter: str | None = None  # continue training from this PEFT adapter directory
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    gradient_checkpointing: bool = False
    load_in_4bit: bool = False  # QLoRA: the frozen base weights in 4-bit NF4 (bitsandbytes), the adapter in full precision


@dataclass
class LoraConfig:
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: str = "all-linear"  # or a comma-separated list of module names


@dataclass
class DataConfig:
    preset: str | None = "wordle"  # a built-in dataset; ignored when `path` is set
    path: str | None = None  # JSONL, CSV or Parquet file; a `save_to_disk` folder; a dataset id in the local HF cache
    split: str = "train"  # of a Hugging Face dataset
    subset: str | None = None  # of a Hugging Face dataset with several configurations
    prompt_column: str = "prompt"
    system_prompt: str | None = None  # prepended when the prompt is a plain string
    assistant_prefix: str | None = None  # pre-filled start of the assistant turn
    max_prompt_length: int = 1024
    shuffle: bool = True
    limit: int | None = None  # use only the first N rows
    eval_size: int = 0  # rows held out from training to evaluate on (a task preset: its own held-out items)
    task_size: int = 2000  # questions generated for a reasoning-gym task (preset rg:<task>)
    task_seed: int = 0  # ... and the seed they are generated with


@dataclass
class RewardsConfig:
    source: str = ""  # Python code defining the reward functions
    weights: dict[str, float] = field(default_factory=dict)  # missing names weigh 1.0
    timeout_s: float = 10.0  # per call of one function


@dataclass
class SamplingConfig:
    num_generations: int = 8  # G: completions per prompt
    max_completion_length: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 disables top-k


@dataclass
class GRPOConfig:
    beta: float = 0.04  # KL weight; 0 skips the reference pass
    use_bias_correction_kl: bool = True  # KL term times the importance ratio: unbiased gradient (TRL 1.16's default)
    epsilon_low: float = 0.2
    epsilon_high: float | None = None  # defaults to epsilon_low (DAPO uses 0.28)
    num_iterations: int = 1  # mu: optimisation passes over each batch
    loss_type: str = "grpo"
    scale_rewards: str = "group"
    mask_truncated_completions: bool = False
    # The variants, with TRL 1.16's names and defaults (shared/specs/grpo.md, "Variants").
    importance_sampling_level: str = "token"  # sequence: GSPO's one length-normalised ratio per completion
    delta: float | None = None  # two-sided clipping: cap on the unclipped ratio; None: off
    sapo_temperature_pos: float = 1.0  # sapo's gate temperature where A > 0
    sapo_temperature_neg: float = 1.05  # ... and where A <= 0
    top_entropy_quantile: float = 1.0  # policy loss on the top q of tokens by entropy; 1.0: every token
    entropy_coef: float = 0.0  # entropy bonus: loss - coef * mean token entropy; 0: off
    multi_objective_aggregation: str = "sum_then_normalize"  # or normalize_then_sum: each function per group first
    dynamic_sampling: bool = False  # DAPO: drop groups with no reward spread, draw more prompts instead
    max_sampling_draws: int = 4  # with dynamic_sampling: draws per micro-batch at most, the first included


@dataclass
class OptimConfig:
    learning_rate: float = 5e-5
    lr_scheduler: str = "constant"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    prompts_per_step: int = 1  # P: prompts per micro-batch
    gradient_accumulation_steps: int = 1  # micro-batches per optimiser step


@dataclass
class ScheduleConfig:
    max_steps: int = 100
    epochs: float | None = None  # when set, overrides max_steps from the dataset size
    save_every: int = 25
    eval_every: int = 0  # steps between evaluations on the held-out rows (data.eval_size); 0: none
    seed: int = 0


@dataclass
class SFTConfig:
    """Supervised warm start: before GRPO, the adapter learns from worked demonstrations.

    GRPO then continues from that adapter, and the KL reference is the warm-started adapter.
    """

    enabled: bool = False
    examples: int = 256  # demonstrations, one per dataset row from the first
    epochs: float = 1.0  # passes over the demonstrations
    learning_rate: float = 2e-4
    batch_size: int = 8
    max_length: int = 640  # prompt + demonstration tokens; longer examples are left out


@dataclass
class EnvironmentConfig:
    """Multi-turn episodes: the model talks with an environment (rft.environments) instead of
    answering once. An empty source keeps single-turn rollouts."""

    source: str = ""  # Python code defining the environment class
    class_name: str | None = None  # which class, when the code defines several
    max_turns: int = 6  # model replies per episode (each at most sampling.max_completion_length tokens)
    max_episode_tokens: int = 1024  # model and environment tokens after the prompt
    timeout_s: float = 10.0  # per call of reset, step or reward
    reward_weight: float = 1.0  # of the environment's own reward(), scored as "environment"

    @property
    def enabled(self) -> bool:
        return bool(self.source.strip())


TRACKERS = ("tensorboard", "trackio", "wandb", "mlflow")


@dataclass
class ReportConfig:
    to: list[str] = field(default_factory=list)  # experiment trackers the run is mirrored to (rft.trackers)
    project: str = "rft"  # the tracker's project the runs go under


@dataclass
class RunConfig:
    name: str = "run"
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rewards: RewardsConfig = field(default_factory=RewardsConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    environment: EnvironmentConfig = field(default_factory=EnvironmentConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    @property
    def completions_per_step(self) -> int:
        return (
            self.optim.prompts_per_step
            * self.sampling.num_generations
            * self.optim.gradient_accumulation_steps
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.dump(self.to_dict(), Dumper=_BlockStyleDumper, sort_keys=False, allow_unicode=True)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_yaml(), encoding="utf-8")

    @classmethod
    def from_dict(cls, data: dict) -> "RunConfig":
        return _build(cls, data or {}, "")

    @classmethod
    def from_yaml(cls, text: str) -> "RunConfig":
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError([f"the YAML does not parse: {exc}"]) from exc
        if data is not None and not isinstance(data, dict):
            raise ConfigError(["the YAML must be a mapping of sections (model, data, rewards, ...)"])
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | Path) -> "RunConfig":
        path = Path(path)
        if not path.is_file():
            raise ConfigError([f"config file {path} does not exist"])
        return cls.from_yaml(path.read_text(encoding="utf-8"))

    def with_overrides(self, assignments: list[str]) -> "RunConfig":
        """Apply `section.key=value` strings (the CLI's --set); values are parsed as YAML."""
        data = self.to_dict()
        problems = []
        for assignment in assignments:
            key, sep, raw_value = assignment.partition("=")
            parts = key.strip().split(".")
            if not sep or not all(parts):
                problems.append(f"--set {assignment!r}: expected section.key=value, e.g. grpo.beta=0.0")
                continue
            node = data
            for part in parts[:-1]:
                if not isinstance(node.get(part), dict):
                    problems.append(f"--set {assignment!r}: unknown section {part!r}")
                    break
                node = node[part]
            else:
                if parts[-1] not in node:
                    problems.append(f"--set {assignment!r}: unknown field {key.strip()!r}")
                    continue
                node[parts[-1]] = yaml.safe_load(raw_value) if raw_value.strip() else None
        if problems:
            raise ConfigError(problems)
        return RunConfig.from_dict(data)

    def problems(self) -> list[str]:
        """Every reason this config cannot run, one message per field; empty when valid."""
        found: list[str] = []

        def require(condition: bool, message: str) -> None:
            if not condition:
                found.append(message)

        s, g, o, sc, lo = self.sampling, self.grpo, self.optim, self.schedule, self.lora
        eps_high = g.epsilon_high if g.epsilon_high is not None else g.epsilon_low
        require(bool(self.name.strip()), "name: give the run a name")
        require(bool(self.model.name_or_path.strip()), "model.name_or_path: choose a model")
        require(self.model.device == "auto" or self.model.device == "cpu" or self.model.device.startswith("cuda"),
                f"model.device: {self.model.device!r} is not auto, cpu or cuda[:N]")
        require(self.model.dtype in ("auto", "float32", "bfloat16", "float16"),
                f"model.dtype: {self.model.dtype!r} is not auto, float32, bfloat16 or float16")
        require(not self.model.load_in_4bit or importlib.util.find_spec("bitsandbytes") is not None,
                f"model.load_in_4bit: needs bitsandbytes, which is not installed ({QLORA_INSTALL})")
        require(self.data.preset or self.data.path, "data: choose a preset or a dataset file (data.path)")
        require(8 <= self.data.max_prompt_length <= 131072, "data.max_prompt_length: must be in [8, 131072] tokens")
        require(self.data.limit is None or self.data.limit >= 1, "data.limit: must be at least 1 or empty")
        require(0 <= self.data.eval_size <= 100_000, "data.eval_size: must be in [0, 100000]; 0 holds out nothing")
        require(1 <= self.data.task_size <= 1_000_000, "data.task_size: must be in [1, 1000000]")
        unknown_trackers = [name for name in self.report.to if name not in TRACKERS]
        require(not unknown_trackers, f"report.to: {', '.join(unknown_trackers)} is not a tracker this project "
                                      f"supports; choose from {', '.join(TRACKERS)}")
        require(bool(self.report.project.strip()), "report.project: a project name is required")
        require(bool(self.rewards.source.strip()), "rewards.source: write at least one reward function")
        require(0 < self.rewards.timeout_s <= 600, "rewards.timeout_s: must be in (0, 600] seconds")
        require(all(_finite(w) for w in self.rewards.weights.values()),
                "rewards.weights: every weight must be a finite number")
        require(s.num_generations >= 2,
                f"sampling.num_generations: is {s.num_generations}; GRPO compares completions within a "
                "group, so it needs at least 2")
        require(s.num_generations <= 256, "sampling.num_generations: at most 256")
        require(1 <= s.max_completion_length <= 32768, "sampling.max_completion_length: must be in [1, 32768]")
        require(_finite(s.temperature) and 0 < s.temperature <= 10,
                "sampling.temperature: must be in (0, 10]; sampling needs a positive temperature")
        require(0 < s.top_p <= 1, "sampling.top_p: must be in (0, 1]")
        require(s.top_k >= 0, "sampling.top_k: must be 0 (off) or positive")
        require(_finite(g.beta) and 0 <= g.beta <= 100, "grpo.beta: must be in [0, 100]")
        require(0 <= g.epsilon_low < 1, "grpo.epsilon_low: must be in [0, 1)")
        require(g.epsilon_high is None or 0 <= g.epsilon_high < 10, "grpo.epsilon_high: must be in [0, 10)")
        require(1 <= g.num_iterations <= 16, "grpo.num_iterations: must be in [1, 16]")
        require(1 <= g.max_sampling_draws <= 64, "grpo.max_sampling_draws: must be in [1, 64]")
        require(g.loss_type in LOSS_TYPES, f"grpo.loss_type: {g.loss_type!r} is not one of {', '.join(LOSS_TYPES)}")
        require(g.scale_rewards in SCALE_REWARDS,
                f"grpo.scale_rewards: {g.scale_rewards!r} is not one of {', '.join(SCALE_REWARDS)}")
        require(g.importance_sampling_level in IMPORTANCE_SAMPLING_LEVELS,
                f"grpo.importance_sampling_level: {g.importance_sampling_level!r} is not one of "
                f"{', '.join(IMPORTANCE_SAMPLING_LEVELS)}")
        require(not (g.importance_sampling_level == "sequence" and g.loss_type in TOKEN_SUM_LOSS_TYPES),
                f"grpo.importance_sampling_level: sequence level (GSPO) with loss_type {g.loss_type} sums per-token "
                "losses, so each sequence's single ratio counts once per token and long completions weigh more, "
                "which is not GSPO's per-sequence objective. Use loss_type grpo (or sapo) with sequence level.")
        require(g.delta is None or (_finite(g.delta) and g.delta > 1 + eps_high),
                f"grpo.delta: must be above 1 + epsilon_high ({1 + eps_high:g}) or empty (off); at or below it "
                "the cap cuts the ratio of positive-advantage tokens that clipping lets through (INTELLECT-2 uses 4)")
        require(g.delta is None or g.loss_type in CLIPPED_LOSS_TYPES,
                f"grpo.delta: caps the unclipped ratio of {', '.join(CLIPPED_LOSS_TYPES)}; {g.loss_type} has no "
                "such term and would ignore it. Leave delta empty.")
        require(g.loss_type != "cispo" or (g.epsilon_high is not None and g.epsilon_high >= 1),
                "grpo.epsilon_high: cispo caps the ratio itself at epsilon_high (not 1 + epsilon_high), so it must be "
                "set and at least 1; left empty it would be epsilon_low and scale every token's gradient down. "
                "ScaleRL recommends 5.")
        require(_finite(g.sapo_temperature_pos) and 0 < g.sapo_temperature_pos <= 100,
                "grpo.sapo_temperature_pos: must be in (0, 100]")
        require(_finite(g.sapo_temperature_neg) and 0 < g.sapo_temperature_neg <= 100,
                "grpo.sapo_temperature_neg: must be in (0, 100]")
        require(_finite(g.top_entropy_quantile) and 0 <= g.top_entropy_quantile <= 1,
                "grpo.top_entropy_quantile: must be in [0, 1]; 1 keeps every token, 0.2 the top 20% by entropy")
        require(_finite(g.entropy_coef) and 0 <= g.entropy_coef <= 10,
                "grpo.entropy_coef: must be in [0, 10]; 0 turns the entropy bonus off")
        require(g.multi_objective_aggregation in MULTI_OBJECTIVE_AGGREGATIONS,
                f"grpo.multi_objective_aggregation: {g.multi_objective_aggregation!r} is not one of "
                f"{', '.join(MULTI_OBJECTIVE_AGGREGATIONS)}")
        require(_finite(o.learning_rate) and 0 < o.learning_rate <= 1, "optim.learning_rate: must be in (0, 1]")
        require(o.lr_scheduler in LR_SCHEDULERS,
                f"optim.lr_scheduler: {o.lr_scheduler!r} is not one of {', '.join(LR_SCHEDULERS)}")
        require(o.warmup_steps >= 0, "optim.warmup_steps: must be 0 or positive")
        require(_finite(o.weight_decay) and 0 <= o.weight_decay <= 10, "optim.weight_decay: must be in [0, 10]")
        require(_finite(o.max_grad_norm) and o.max_grad_norm > 0, "optim.max_grad_norm: must be a positive number")
        require(1 <= o.prompts_per_step <= 1024, "optim.prompts_per_step: must be in [1, 1024]")
        # The batch is always whole groups (prompts_per_step x num_generations rows), so there is no
        # divisibility to check; its size is what can be absurd.
        require(o.prompts_per_step * s.num_generations <= MAX_COMPLETIONS_PER_MICRO_BATCH,
                f"optim.prompts_per_step: {o.prompts_per_step} prompts x {s.num_generations} completions is "
                f"{o.prompts_per_step * s.num_generations} sequences per micro-batch; at most "
                f"{MAX_COMPLETIONS_PER_MICRO_BATCH}. Use gradient_accumulation_steps for a larger batch.")
        require(1 <= o.gradient_accumulation_steps <= 1024, "optim.gradient_accumulation_steps: must be in [1, 1024]")
        require(1 <= sc.max_steps <= 1_000_000, "schedule.max_steps: must be in [1, 1000000]")
        require(sc.epochs is None or 0 < sc.epochs <= 1000, "schedule.epochs: must be positive or empty")
        require(sc.save_every >= 0, "schedule.save_every: must be 0 (only at the end) or positive")
        require(sc.eval_every >= 0, "schedule.eval_every: must be 0 (off) or positive")
        require(sc.eval_every == 0 or self.data.eval_size > 0,
                "schedule.eval_every: evaluation needs held-out rows; set data.eval_size (e.g. 100) or eval_every to 0")
        require(0 <= sc.seed < 2**32, "schedule.seed: must be in [0, 2**32 - 1] (numpy's seed range)")
        require(1 <= lo.rank <= 1024, "lora.rank: must be in [1, 1024]")
        require(0 < lo.alpha <= 65536, "lora.alpha: must be in [1, 65536]")
        require(0 <= lo.dropout < 1, "lora.dropout: must be in [0, 1)")
        require(bool(lo.target_modules.strip()), "lora.target_modules: 'all-linear' or module names")
        if self.environment.enabled:
            found.extend(self.environment_problems())
        if self.sft.enabled:
            ft = self.sft
            require(1 <= ft.examples <= 1_000_000, "sft.examples: must be in [1, 1000000] demonstrations")
            require(_finite(ft.epochs) and 0 < ft.epochs <= 100, "sft.epochs: must be in (0, 100]")
            require(_finite(ft.learning_rate) and 0 < ft.learning_rate <= 1, "sft.learning_rate: must be in (0, 1]")
            require(1 <= ft.batch_size <= 1024, "sft.batch_size: must be in [1, 1024]")
            require(16 <= ft.max_length <= 131072, "sft.max_length: must be in [16, 131072] tokens")
        return found

    def environment_problems(self) -> list[str]:
        from rft.environments.runtime import EnvironmentCodeError, analyse_environment

        env, found = self.environment, []
        if not 1 <= env.max_turns <= 1000:
            found.append("environment.max_turns: must be in [1, 1000]")
        if not 1 <= env.max_episode_tokens <= 131072:
            found.append("environment.max_episode_tokens: must be in [1, 131072]")
        if not (_finite(env.timeout_s) and env.timeout_s > 0):
            found.append("environment.timeout_s: must be a positive number of seconds")
        if not _finite(env.reward_weight):
            found.append("environment.reward_weight: must be a number")
        try:
            analyse_environment(env.source, env.class_name)
        except EnvironmentCodeError as exc:
            found.append(f"environment.source: {exc}")
        return found

    def validate(self) -> "RunConfig":
        problems = self.problems()
        if problems:
            raise ConfigError(problems)
        return self


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _build(cls, data: dict, prefix: str):
    """Build a dataclass from a dict, coercing scalars and naming unknown or mistyped fields."""
    if not isinstance(data, dict):
        raise ConfigError([f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {type(data).__name__}"])
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    problems = [f"{prefix}{key}: unknown field (known: {', '.join(sorted(known))})" for key in data if key not in known]
    values = {}
    for name in known & data.keys():
        hint, value = hints[name], data[name]
        try:
            values[name] = _coerce(hint, value, f"{prefix}{name}")
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    return cls(**values)


def _coerce(hint, value, where: str):
    if dataclasses.is_dataclass(hint):
        return _build(hint, value or {}, where + ".")
    args = typing.get_args(hint)
    optional = type(None) in args
    if value is None:
        if optional:
            return None
        raise ConfigError([f"{where}: a value is required"])
    base = next((a for a in args if a is not type(None)), hint) if optional else hint
    origin = typing.get_origin(base)
    if origin is list:
        if isinstance(value, str):  # "tensorboard, trackio" from a form or --set
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ConfigError([f"{where}: expected a list of names"])
        return list(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError([f"{where}: expected a mapping of name: number"])
        try:
            return {str(k): float(v) for k, v in value.items()}
        except (TypeError, ValueError):
            raise ConfigError([f"{where}: every value must be a number"]) from None
    if base is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError([f"{where}: expected true or false, got {value!r}"])
    if base in (int, float):
        if isinstance(value, bool):
            raise ConfigError([f"{where}: expected a number, got {value!r}"])
        try:
            number = base(value)
        except (TypeError, ValueError, OverflowError):  # OverflowError: int(.inf)
            raise ConfigError([f"{where}: expected a number, got {value!r}"]) from None
        if base is int and isinstance(value, float) and not value.is_integer():
            raise ConfigError([f"{where}: expected a whole number, got {value!r}"])
        return number
    if base is str:
        if isinstance(value, (dict, list)):
            raise ConfigError([f"{where}: expected text, got a {type(value).__name__}"])
        return str(value)
    return value


class _BlockStyleDumper(yaml.SafeDumper):
    """Writes multi-line strings (reward code) as readable `|` blocks."""


def _represent_str(dumper, text: str):
    style = "|" if "\n" in text else None
    if style:
        text = "\n".join(line.rstrip() for line in text.splitlines()) + "\n"
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_BlockStyleDumper.add_representer(str, _represent_str)
