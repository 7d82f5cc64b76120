"""The GRPO loop: sample a group per prompt, score it, normalise rewards per group, update.

One optimisation step = `gradient_accumulation_steps` micro-batches of `prompts_per_step`
prompts x `num_generations` completions, each optimised `num_iterations` times, in each process
(several under `accelerate launch`: rft.distributed). Everything a user watches is written to the
run directory (rft.runs) as the step ends.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import resource
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from rft import data as datasets
from rft import generation, held_out, models, sft
from rft.config import GRPOConfig, OptimConfig, RunConfig
from rft.distributed import Processes
from rft.faults import fault_point
from rft.grpo import loss as grpo_loss
from rft.environments import episodes as environment_episodes
from rft.environments.runtime import ENVIRONMENT_REWARD, EnvironmentCodeError, EnvironmentRuntime
from rft.grpo.sampler import Rollout, completion_logprobs, rollout_from_episodes, sample_group
from rft.rewards import RewardCodeError, RewardRuntime
from rft.rewards import versions as reward_versions
from rft.monitoring import NO_SIGNAL_ADVICE, NO_SIGNAL_STEPS, format_duration
from rft.runs import FollowerWriter, RunWriter, checkpoint_path, read_metrics, read_status, sft_adapter_path
from rft.trackers import Trackers

TRAINER_STATE_FILE = "trainer_state.pt"


class StopTraining(Exception):
    """Raised inside the loop when a graceful stop was requested between steps."""


@dataclass
class PromptRecord:
    messages: list[dict]
    text: str
    example: dict


@dataclass
class MicroBatch:
    """A scored rollout; ready for the update once `Trainer.assign_advantages` has seen the whole step."""

    prompts: list[PromptRecord]
    rollout: Rollout
    rewards: dict[str, list[float]]  # per function, NaN = missing
    total: torch.Tensor  # [B]; NaN where no function could score the completion
    logp_old: torch.Tensor | None  # [B, Lc]; None when num_iterations == 1 (rho = 1)
    logp_ref: torch.Tensor | None  # [B, Lc]; None when beta == 0
    loss_mask: torch.Tensor  # [B, Lc]: completion mask, minus masked truncated and unscorable completions
    groups_sampled: int = 0  # prompt groups sampled for it, those dynamic sampling dropped included
    sampled_totals: list[float] = dataclasses.field(default_factory=list)  # every sampled completion's total
    # Set by assign_advantages: batch scaling needs every micro-batch of the step scored first.
    advantages: torch.Tensor | None = None  # [B]
    zero_std_groups: torch.Tensor | None = None  # [P] bool
    # Set by the first optimisation pass, for the rollouts (what Inspect shows of the sampling policy).
    sampled_logp: torch.Tensor | None = None  # [B, Lc]
    sampled_entropy: torch.Tensor | None = None  # [B, Lc]


@dataclass
class Draw:
    """Prompts, their sampled groups and every function's scores, before the update needs more."""

    prompts: list[PromptRecord]
    rollout: Rollout
    rewards: dict[str, list[float]]  # per function, NaN = missing
    total: torch.Tensor  # [B]

    def select_groups(self, groups: list[int], group_size: int) -> Draw:
        rows = [g * group_size + i for g in groups for i in range(group_size)]
        return Draw([self.prompts[g] for g in groups], self.rollout.select_groups(groups),
                    {name: [values[r] for r in rows] for name, values in self.rewards.items()}, self.total[rows])

    @staticmethod
    def concatenate(draws: list[Draw], pad_id: int) -> Draw:
        return Draw([p for d in draws for p in d.prompts], Rollout.concatenate([d.rollout for d in draws], pad_id),
                    {name: [v for d in draws for v in d.rewards[name]] for name in draws[0].rewards},
                    torch.cat([d.total for d in draws]))


@dataclass
class StepOutcome:
    """What one process's step adds to the step's metrics row, rollouts and log; under a launcher
    the main process pools every process's outcome before writing."""

    groups: list[dict]  # rollout_records: one per prompt group
    zero_std_groups: list[bool]
    stats: dict[str, list[float]]  # optimise(): loss, kl, ... one value per micro-batch pass
    log_lines: list[str]  # a follower's log lines, for the main process to write

    @staticmethod
    def pooled(outcomes: list[StepOutcome]) -> StepOutcome:
        return StepOutcome(
            groups=[group for outcome in outcomes for group in outcome.groups],
            zero_std_groups=[flag for outcome in outcomes for flag in outcome.zero_std_groups],
            stats={key: [value for outcome in outcomes for value in outcome.stats[key]] for key in outcomes[0].stats},
            log_lines=[line for outcome in outcomes for line in outcome.log_lines],
        )


def step_reward_moments(totals: list[torch.Tensor], processes: Processes) -> tuple[float, float]:
    """The mean and unbiased std of the step's scored rewards, over `totals` (one tensor per micro-batch)
    in every process; NaN when none (mean) or fewer than two (std) were scored. Every process gets
    the same values from three sums (count, sum, sum of squares) rather than a gather of all rewards."""
    rewards = torch.cat(totals).double()
    scored = rewards[~rewards.isnan()]
    count, total = processes.sum(float(scored.numel())), processes.sum(float(scored.sum()))
    mean = total / count if count else float("nan")
    return mean, grpo_loss.std_from_sums(count, total, processes.sum(float((scored**2).sum())))


@dataclass
class LossParts:
    loss: torch.Tensor  # what backward() takes: this micro-batch's share of the step's loss
    logged_loss: float  # the micro-batch's loss before its share is taken
    kl: torch.Tensor | None  # [B, T] plain k3, detached; None when beta == 0
    clipped_low: torch.Tensor  # [B, T] or [B, 1] bool
    clipped_high: torch.Tensor


def micro_batch_loss(grpo: GRPOConfig, max_completion_length: int, logp: torch.Tensor, logp_old: torch.Tensor,
                     logp_ref: torch.Tensor | None, advantages: torch.Tensor, mask: torch.Tensor,
                     entropy: torch.Tensor | None, global_active: float, shares: int) -> LossParts:
    """One micro-batch's loss under `grpo`'s settings, from rft.grpo.loss's pieces (bench/crosscheck_trl.py
    compares it with TRL's _compute_loss). `shares`: micro-batches in the step over every process, whose
    gradients are summed; dapo and cispo divide by `global_active`, the step's active tokens, instead.
    `entropy` must carry gradients when entropy_coef > 0."""
    eps_high = grpo.epsilon_high if grpo.epsilon_high is not None else grpo.epsilon_low
    ratio = torch.exp(grpo_loss.log_importance_weights(logp, logp_old, mask, grpo.importance_sampling_level))
    objective, clipped_low, clipped_high = grpo_loss.policy_objective(
        grpo.loss_type, ratio, logp, advantages, grpo.epsilon_low, eps_high, grpo.delta,
        grpo.sapo_temperature_pos, grpo.sapo_temperature_neg)
    kl = kl_penalty = None
    if logp_ref is not None and grpo.beta > 0:
        kl = grpo_loss.k3_kl(logp, logp_ref)
        # The ratio reweights the penalty's gradient; the logged kl stays the plain k3 estimate.
        kl_penalty = grpo_loss.bias_corrected_kl(kl, ratio) if grpo.use_bias_correction_kl else kl
    entropy_mask = None
    if grpo.top_entropy_quantile < 1.0:
        # TRL takes the quantile over every process's tokens of the micro-batch; here it is over this
        # process's micro-batch (the same with one process), which saves gathering every entropy.
        entropy_mask = grpo_loss.high_entropy_mask(entropy.detach(), mask, grpo.top_entropy_quantile)
    token_loss = grpo_loss.per_token_loss(objective, kl_penalty, grpo.beta, entropy_mask)
    policy_loss = grpo_loss.aggregate_loss(token_loss, mask, grpo.loss_type, max_completion_length, global_active)
    loss = policy_loss if grpo.loss_type in ("dapo", "cispo") else policy_loss / shares
    bonus = 0.0
    if grpo.entropy_coef > 0:
        # A mean over the tokens the policy term acts on, the same for every loss_type: one share of the step's.
        acting = mask if entropy_mask is None else mask * entropy_mask
        bonus = grpo.entropy_coef * grpo_loss.mean_entropy(entropy, acting)
        loss = loss - bonus / shares
    return LossParts(loss, (policy_loss - bonus).item(), None if kl is None else kl.detach(),
                     clipped_low, clipped_high)


def learning_rate_schedule(optimizer: torch.optim.Optimizer, optim: OptimConfig, max_steps: int):
    """The schedule of `optim.lr_scheduler`, with its warm-up of `optim.warmup_steps` (the rate ramps
    up linearly from 0) whatever the schedule. transformers' "constant" ignores the warm-up, so a
    constant rate is its "constant_with_warmup", the same schedule when there is no warm-up."""
    from transformers import get_scheduler

    name = "constant_with_warmup" if optim.lr_scheduler == "constant" else optim.lr_scheduler
    return get_scheduler(name, optimizer, num_warmup_steps=optim.warmup_steps, num_training_steps=max_steps)


def step_log_line(row: dict) -> str:
    """One line per step in logs.txt: what a user of TRL's trainer expects to see scroll by."""
    def number(key: str, style: str = ".3f") -> str:
        value = row.get(key)
        return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:{style}}"

    flat = row.get("frac_reward_zero_std") or 0.0
    # KL and loss start near zero (1e-6 and below): significant digits, not decimals, show them moving.
    return (f"reward {number('reward')} ± {number('reward_std')} · kl {number('kl', '.3g')} · "
            f"loss {number('loss', '.3g')} · "
            f"flat groups {flat:.0%} · length {number('completion_length/mean', '.1f')} · "
            f"{number('time/step', '.1f')} s (generate {number('time/generate', '.1f')}, "
            f"score {number('time/score', '.1f')}, train {number('time/train', '.1f')})")


def run_summary(metrics: pd.DataFrame, seconds: float, resumed_from: int = 0) -> str:
    """The end-of-run line: how long this process took (for the steps after `resumed_from`, on a
    resume), and how the reward moved from the run's first steps to its last."""
    if metrics.empty:
        return f"finished in {format_duration(seconds)}; no step was trained"
    window = min(5, len(metrics))
    first, last = metrics["reward"].head(window).mean(), metrics["reward"].tail(window).mean()
    steps = int(metrics["step"].iloc[-1])
    took = f"{steps} steps in {format_duration(seconds)}" if not resumed_from else \
        f"{steps} steps, steps {resumed_from + 1} to {steps} in {format_duration(seconds)} after the resume"
    return f"finished: {took}; mean reward {first:.3f} over the first {window} step(s), {last:.3f} over the last {window}"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Trainer:
    def __init__(self, config: RunConfig, run_dir: str | Path, processes: Processes = Processes()):
        config = config.validate()
        if processes.device:  # launched: each process on its own device
            config = dataclasses.replace(config, model=dataclasses.replace(config.model, device=processes.device))
        self.config = config
        self.processes = processes
        self.run_dir = Path(run_dir)
        self.writer = RunWriter(self.run_dir) if processes.is_main else FollowerWriter(self.run_dir, processes.rank)
        self.step = 0

    # ---- set-up -----------------------------------------------------------------------------

    def setup(self) -> None:
        cfg = self.config
        seed_everything(cfg.schedule.seed)
        self.tokenizer = models.load_tokenizer(cfg.model.name_or_path)
        adapter = self._warm_start() or cfg.model.adapter
        base = models.load_base_model(cfg.model)
        self.model = models.wrap_with_lora(base, cfg.lora, adapter)
        self.device = next(self.model.parameters()).device
        self.processes.copy_from_main(p for p in self.model.parameters() if p.requires_grad)
        trainable, total = models.parameter_counts(self.model)
        weights = f"4-bit NF4 weights, {base.dtype} compute" if cfg.model.load_in_4bit else str(base.dtype)
        self.writer.log(f"model {cfg.model.name_or_path} on {self.device} ({weights}); "
                        f"trainable {trainable:,} of {total:,} parameters")
        self.bf16_decoding = generation.decodes_in_bf16(self.model, models.cpu_bf16_matmuls(self.device,
                                                                                              cfg.model.dtype))
        self.writer.log(f"generation: {generation.PATH_DESCRIPTIONS[generation.generation_path(self.model)]}"
                        + ("; linear layers in bf16 (this CPU multiplies bf16 natively)" if self.bf16_decoding else ""))
        self.prompts = self._prepare_prompts()
        self.environment = self._start_environment()
        self.held_out_rows = datasets.load_held_out_rows(cfg.data) if cfg.schedule.eval_every else []
        if self.held_out_rows:
            self.writer.log(f"held out: {len(self.held_out_rows)} rows, evaluated greedily every "
                            f"{cfg.schedule.eval_every} steps with the run's reward functions")
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=cfg.optim.learning_rate, weight_decay=cfg.optim.weight_decay)
        self.max_steps = self._max_steps()
        self.scheduler = learning_rate_schedule(self.optimizer, cfg.optim, self.max_steps)

    def _start_environment(self) -> EnvironmentRuntime | None:
        """The environment the episodes are played in (rft.environments), or None for single-turn rollouts."""
        env = self.config.environment
        if not env.enabled:
            return None
        runtime = EnvironmentRuntime(env.source, env.class_name, env.timeout_s)
        try:
            environment_episodes.check_tool_format(self.tokenizer, runtime)
        except EnvironmentCodeError:
            runtime.close()
            raise
        self.writer.log(f"environment: {runtime.info.describe()}; up to {env.max_turns} turns and "
                        f"{env.max_episode_tokens} tokens an episode")
        return runtime

    # ---- reward code, which the user may change while the run trains (rft.rewards.versions) ------

    def start_rewards(self, start: int) -> None:
        """Score with the reward code in force at step `start` (the checkpoint resumed from), or with
        the config's, kept as version 1, on a fresh start."""
        if self.processes.is_main and reward_versions.version_in_force(self.run_dir, start) is None:
            cfg = self.config.rewards
            reward_versions.record_version(self.run_dir, cfg.source, cfg.weights, from_step=1)
        self.processes.wait_for_all()  # the version exists before any process reads it
        version = reward_versions.version_in_force(self.run_dir, start)
        self.use_rewards(RewardRuntime(version.source, version.weights, self.config.rewards.timeout_s), version)
        if version.number > 1:
            self.writer.log(f"rewards: version {version.number}, in force since step {version.from_step}")

    def use_rewards(self, runtime: RewardRuntime, version: reward_versions.RewardVersion) -> None:
        if hasattr(self, "rewards"):
            self.rewards.close()
        if self.environment is not None and self.environment.has_reward and ENVIRONMENT_REWARD in runtime.function_names:
            runtime.close()
            raise EnvironmentCodeError(f"a reward function is named {ENVIRONMENT_REWARD!r}, the name the "
                                       "environment's own reward() is scored under; rename the function")
        self.rewards, self.reward_version = runtime, version
        self.function_names = list(runtime.function_names)
        weights = dict(version.weights)
        if self.environment is not None and self.environment.has_reward:
            self.function_names.append(ENVIRONMENT_REWARD)
            weights[ENVIRONMENT_REWARD] = self.config.environment.reward_weight
        self.weights = torch.tensor([weights.get(n, 1.0) for n in self.function_names])

    def take_reward_change(self, step: int) -> None:
        """At a step boundary: swap in reward code the dashboard sent, or refuse it and keep the current."""
        main = self.processes.is_main
        request = self.processes.from_main(reward_versions.take_request(self.run_dir) if main else None)
        if request is None:
            return
        try:
            runtime = RewardRuntime(request["source"], request.get("weights") or {}, self.config.rewards.timeout_s)
        except RewardCodeError as exc:
            if main:
                reward_versions.record_outcome(self.run_dir, request, None, str(exc))
            self.writer.log(f"rewards: the edited code was refused, version {self.reward_version.number} stays: "
                            f"{exc}", step)
            return
        version = None
        if main:
            version = reward_versions.record_version(self.run_dir, request["source"], runtime.weights, from_step=step)
            reward_versions.record_outcome(self.run_dir, request, version,
                                           f"version {version.number} scores from step {step}")
        version = self.processes.from_main(version)
        self.use_rewards(runtime, version)
        self.writer.log(f"rewards: version {version.number} in force from this step "
                        f"(functions: {', '.join(self.function_names)})", step)

    def _warm_start(self) -> Path | None:
        """With sft.enabled, the warm-started adapter GRPO continues from: made now, or on a resume
        the one made before (never made twice, so the KL reference stays the same)."""
        if not self.config.sft.enabled:
            return None
        existing = sft_adapter_path(self.run_dir)
        if existing is not None:
            self.writer.log(f"sft: continuing from the warm start in {existing.relative_to(self.run_dir)}")
            return existing
        self.writer.set_status("running", phase="sft")
        return sft.run_sft(self.config, self.tokenizer, self.writer, self.processes,
                           on_step=lambda step, steps: self.writer.set_status("running", sft_step=step, sft_steps=steps))

    def _prepare_prompts(self) -> list[PromptRecord]:
        """Every usable row as chat messages + rendered text; over-long prompts are reported and left out."""
        data_cfg = self.config.data
        rows = datasets.load_rows(data_cfg)
        records, too_long = [], []
        for index, row in enumerate(rows):
            messages = datasets.to_messages(row, data_cfg)
            text = datasets.render_prompt(self.tokenizer, messages)
            length = len(self.tokenizer(text, add_special_tokens=False).input_ids)
            if length > data_cfg.max_prompt_length:
                too_long.append((index + 1, length))
                continue
            records.append(PromptRecord(messages, text, datasets.example_of(row, data_cfg)))
        if too_long:
            shown = ", ".join(f"row {i} ({n} tokens)" for i, n in too_long[:5])
            self.writer.log(f"warning: {len(too_long)} prompt(s) over data.max_prompt_length="
                            f"{data_cfg.max_prompt_length} left out: {shown}")
        if not records:
            raise datasets.DatasetError(
                f"every prompt is longer than data.max_prompt_length={data_cfg.max_prompt_length} tokens; raise the limit"
            )
        self.writer.log(f"dataset: {len(records)} prompts")
        return records

    @property
    def prompts_seen_per_step(self) -> int:
        """Prompts one optimisation step sees, over every micro-batch of every process."""
        optim = self.config.optim
        return optim.prompts_per_step * optim.gradient_accumulation_steps * self.processes.world_size

    def _max_steps(self) -> int:
        schedule = self.config.schedule
        if schedule.epochs:
            return max(1, math.ceil(schedule.epochs * len(self.prompts) / self.prompts_seen_per_step))
        return schedule.max_steps

    def prompts_for(self, step: int, micro: int) -> list[PromptRecord]:
        """The prompts of this process's micro-batch: a seeded permutation per epoch, a pure function
        of the step, so a resumed run sees exactly the prompts it would have seen."""
        optim = self.config.optim
        size = optim.prompts_per_step
        micro_batch = ((step - 1) * optim.gradient_accumulation_steps + micro) * self.processes.world_size
        first = (micro_batch + self.processes.rank) * size
        chosen = []
        for position in range(first, first + size):
            epoch, offset = divmod(position, len(self.prompts))
            order = self._epoch_order(epoch)
            chosen.append(self.prompts[order[offset]])
        return chosen

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if not self.config.data.shuffle:
            return np.arange(len(self.prompts))
        return np.random.default_rng([self.config.schedule.seed, epoch]).permutation(len(self.prompts))

    # ---- one step -----------------------------------------------------------------------------

    def rollout_and_score(self, step: int, micro: int, timings: dict) -> MicroBatch:
        cfg = self.config
        first = self.sample_and_score(self.prompts_for(step, micro), step, timings)
        draws, sampled, sampled_totals = self.informative_draws(first, step, micro, timings) \
            if cfg.grpo.dynamic_sampling else ([first], len(first.prompts), first.total.tolist())
        draw = Draw.concatenate(draws, self.tokenizer.pad_token_id) if len(draws) > 1 else draws[0]
        rollout = draw.rollout

        started = time.perf_counter()
        loss_mask = rollout.completion_mask.clone()
        if cfg.grpo.mask_truncated_completions:
            loss_mask[rollout.truncated] = 0.0
        # A completion no reward function could score teaches nothing, so it is out of the loss and
        # out of dapo's active-token count, not only given advantage 0.
        loss_mask[draw.total.isnan()] = 0.0
        # Generation stays outside autocast: with no weight gradients to cache casts for, it would
        # recast every weight at every token (about 5% slower on a 2-core CPU).
        with torch.no_grad(), models.training_autocast(self.device, cfg.model.dtype):
            logp_old = None
            if cfg.grpo.num_iterations > 1:
                logp_old, _ = completion_logprobs(self.model, rollout, cfg.sampling.temperature)
            logp_ref = None
            if cfg.grpo.beta > 0:
                with models.reference_policy(self.model):
                    logp_ref, _ = completion_logprobs(self.model, rollout, cfg.sampling.temperature)
        timings["train"] += time.perf_counter() - started
        return MicroBatch(draw.prompts, rollout, draw.rewards, draw.total, logp_old, logp_ref, loss_mask,
                          groups_sampled=sampled, sampled_totals=sampled_totals)

    def sample_and_score(self, prompts: list[PromptRecord], step: int, timings: dict) -> Draw:
        """A group of completions (or episodes) for each prompt, and every reward function's scores of them."""
        self.model.eval()
        if self.environment is None:
            rollout = sample_group(self.model, self.tokenizer, [p.text for p in prompts], self.config.sampling,
                                   bf16=self.bf16_decoding)
        else:
            prompts, rollout = self.play_episodes(prompts, step, timings)
        group = self.config.sampling.num_generations
        expanded = [p for p in prompts for _ in range(group)]
        examples = [p.example for p in expanded]
        if rollout.episodes is not None:
            examples = [dict(example, episode=e.summary()) for example, e in zip(examples, rollout.episodes, strict=True)]
        timings["generate"] += rollout.generate_seconds
        fault_point("generate", step)

        started = time.perf_counter()
        completion_ids = [ids[mask.bool()].tolist() for ids, mask in zip(rollout.completion_ids, rollout.completion_mask)]
        scores = self.rewards.score([p.text for p in expanded], rollout.completions, examples, completion_ids)
        for name, text in scores.logs:
            self.writer.log(f"[reward {name}] {text}", step)
        for name, errors in scores.errors.items():
            self.writer.log(f"[reward {name}] {errors.count} completion(s) scored as missing: {errors.first_message}", step)
        per_function = scores.per_function
        if self.environment is not None:
            per_function = environment_episodes.with_episode_outcomes(per_function, rollout.episodes,
                                                                      self.environment.has_reward)
        total = grpo_loss.total_rewards(self.score_matrix(per_function), self.weights)
        timings["score"] += time.perf_counter() - started
        return Draw(prompts, rollout, per_function, total)

    def play_episodes(self, prompts: list[PromptRecord], step: int,
                      timings: dict) -> tuple[list[PromptRecord], Rollout]:
        """G episodes per prompt in the environment, as a rollout, and the prompts as reset() opened
        them; an environment's failures go to the log."""
        cfg = self.config
        batch = environment_episodes.play(
            self.model, self.tokenizer, [p.messages for p in prompts], [p.example for p in prompts], cfg.sampling,
            cfg.environment, self.environment, bf16=self.bf16_decoding)
        timings["environment"] += batch.environment_seconds
        failed = [episode.problem for episode in batch.episodes if episode.problem]
        if failed:
            self.writer.log(f"[environment] {len(failed)} episode(s) scored as missing: {failed[0]}", step)
        opened = [PromptRecord(messages, text, prompt.example)
                  for messages, text, prompt in zip(batch.prompt_messages, batch.prompt_texts, prompts, strict=True)]
        return opened, rollout_from_episodes(self.tokenizer, batch, cfg.sampling.num_generations, self.device)

    def informative_draws(self, first: Draw, step: int, micro: int,
                          timings: dict) -> tuple[list[Draw], int, list[float]]:
        """DAPO's dynamic sampling: the groups whose rewards have no spread (no learning signal) are
        dropped, and more prompts are drawn until the micro-batch has `prompts_per_step` informative
        groups, or `max_sampling_draws` draws were made. If no draw had any, the first one is kept
        as it is (its advantages are all zero). Returns the kept draws, how many groups were sampled
        and every sampled completion's total (the policy's reward, dropped groups included)."""
        wanted, group = self.config.optim.prompts_per_step, self.config.sampling.num_generations
        kept, found, sampled, draw, totals = [], 0, 0, first, []
        for number in range(1, self.config.grpo.max_sampling_draws + 1):
            if number > 1:
                draw = self.sample_and_score(self.extra_prompts(step, micro, number), step, timings)
            sampled += len(draw.prompts)
            totals += draw.total.tolist()
            flat = grpo_loss.group_advantages(draw.total, group, "group")[1]
            informative = [g for g in range(len(draw.prompts)) if not flat[g]][: wanted - found]
            if informative:
                kept.append(draw.select_groups(informative, group))
                found += len(informative)
            if found == wanted:
                break
        return kept or [first], sampled, totals

    def extra_prompts(self, step: int, micro: int, draw: int) -> list[PromptRecord]:
        """The prompts of a further draw: seeded by the step, micro-batch, draw and process, so a
        resumed run draws the same ones."""
        size = min(self.config.optim.prompts_per_step, len(self.prompts))
        rng = np.random.default_rng([self.config.schedule.seed, step, micro, draw, self.processes.rank])
        return [self.prompts[i] for i in rng.choice(len(self.prompts), size=size, replace=False)]

    def assign_advantages(self, batches: list[MicroBatch]) -> None:
        """The group-relative advantages of the step's micro-batches, once all of them are scored:
        with `scale_rewards: batch` each divides by the std of the whole step (every micro-batch of
        every process), not by its own. With `multi_objective_aggregation: normalize_then_sum` each
        function is normalised within its group first, and the weighted sums are then standardised
        over the whole step (TRL's rule, which leaves scale_rewards aside)."""
        cfg = self.config
        group = cfg.sampling.num_generations
        if cfg.grpo.multi_objective_aggregation == "normalize_then_sum":
            scores = [grpo_loss.group_normalised_rewards(self.score_matrix(batch.rewards), self.weights, group) for batch in batches]
            mean, std = step_reward_moments(scores, self.processes)
            for batch, batch_scores in zip(batches, scores):
                advantages, batch.zero_std_groups = grpo_loss.step_advantages(batch_scores, group, mean, std)
                batch.advantages = advantages.to(self.device)
            return
        batch_std = None
        if cfg.grpo.scale_rewards == "batch":
            batch_std = step_reward_moments([batch.total for batch in batches], self.processes)[1]
        for batch in batches:
            advantages, batch.zero_std_groups = grpo_loss.group_advantages(
                batch.total, group, cfg.grpo.scale_rewards, batch_std)
            batch.advantages = advantages.to(self.device)

    def score_matrix(self, per_function: dict[str, list[float]]) -> torch.Tensor:
        """Each function's scores as one [B, functions] tensor, NaN where missing."""
        return torch.tensor([per_function[n] for n in self.function_names], dtype=torch.float32).T

    def optimise(self, batches: list[MicroBatch], timings: dict) -> dict:
        """num_iterations passes of gradient accumulation over the step's micro-batches."""
        cfg, g = self.config, self.config.grpo
        started = time.perf_counter()
        self.model.train()
        global_active = self.processes.sum(float(sum(b.loss_mask.sum() for b in batches)))
        shares = len(batches) * self.processes.world_size
        needs_entropy = g.top_entropy_quantile < 1.0 or g.entropy_coef > 0
        stats = {"loss": [], "kl": [], "entropy": [], "clip_low": [], "clip_high": [], "grad_norm": []}
        for iteration in range(cfg.grpo.num_iterations):
            self.optimizer.zero_grad(set_to_none=True)
            for batch in batches:
                mask = batch.loss_mask.to(self.device)
                with models.training_autocast(self.device, cfg.model.dtype):
                    logp, entropy = completion_logprobs(self.model, batch.rollout, cfg.sampling.temperature,
                                                        with_entropy=iteration == 0 or needs_entropy,
                                                        entropy_grad=g.entropy_coef > 0)
                logp_old = batch.logp_old if batch.logp_old is not None else logp.detach()
                if iteration == 0:
                    batch.sampled_logp = logp_old.detach().float().cpu()
                    batch.sampled_entropy = None if entropy is None else entropy.detach().float().cpu()
                parts = micro_batch_loss(g, cfg.sampling.max_completion_length, logp, logp_old, batch.logp_ref,
                                         batch.advantages, mask, entropy, global_active, shares)
                parts.loss.backward()
                stats["loss"].append(parts.logged_loss)
                if parts.kl is not None:
                    stats["kl"].append(grpo_loss.masked_mean(parts.kl, mask))
                if entropy is not None and iteration == 0:
                    stats["entropy"].append(grpo_loss.masked_mean(entropy.detach(), mask))
                stats["clip_low"].append(grpo_loss.masked_mean(parts.clipped_low.float(), mask))
                stats["clip_high"].append(grpo_loss.masked_mean(parts.clipped_high.float(), mask))
            params = [p for p in self.model.parameters() if p.requires_grad]
            self.processes.sum_gradients(params)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.optim.max_grad_norm)
            stats["grad_norm"].append(float(grad_norm))
            self.optimizer.step()
        self.scheduler.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        timings["train"] += time.perf_counter() - started
        return stats

    def metrics_row(self, step: int, outcome: StepOutcome, timings: dict, step_seconds: float) -> dict:
        """The step's metrics, from its (pooled) outcome."""
        groups, stats = outcome.groups, outcome.stats

        def pooled(key: str) -> torch.Tensor:
            return torch.tensor([value for group in groups for value in group[key]], dtype=torch.float64)

        total, advantages, lengths = pooled("total"), pooled("advantages"), pooled("completion_tokens")
        truncated = pooled("truncated")
        tokens = float(lengths.sum())

        def mean(values):
            return float(np.mean(values)) if values else None

        row = {
            "step": step,
            "epoch": step * self.prompts_seen_per_step / len(self.prompts),
            # Over the completions that have a reward: an unscorable one has none (NaN), not 0.
            "reward": float(total.nanmean()),
            "reward_std": float(grpo_loss.nan_std(total)),
            "rewards/unscorable": int(total.isnan().sum()),
            "reward_version": self.reward_version.number,
        }
        for name in self.function_names:
            values = np.array([v for group in groups for v in group["rewards"][name]], dtype=float)
            present = values[~np.isnan(values)]
            row[f"rewards/{name}/mean"] = float(present.mean()) if present.size else None
            row[f"rewards/{name}/std"] = float(present.std()) if present.size > 1 else 0.0 if present.size else None
            row[f"rewards/{name}/missing"] = int(np.isnan(values).sum())
        row.update({
            "group_rewards": [group["total"] for group in groups],
            "advantages/mean": float(advantages.mean()),
            "advantages/std": float(advantages.std()) if advantages.numel() > 1 else 0.0,
            "advantages/min": float(advantages.min()),
            "advantages/max": float(advantages.max()),
            "frac_reward_zero_std": float(np.mean(outcome.zero_std_groups)),
            **self.dynamic_sampling_metrics(stats, len(groups)),
            "loss": mean(stats["loss"]),
            "kl": mean(stats["kl"]),
            "entropy": mean(stats["entropy"]),
            "clip_ratio/low": mean(stats["clip_low"]),
            "clip_ratio/high": mean(stats["clip_high"]),
            "clip_ratio/region": (mean(stats["clip_low"]) or 0.0) + (mean(stats["clip_high"]) or 0.0),
            "completion_length/mean": float(lengths.mean()),
            "completion_length/min": float(lengths.min()),
            "completion_length/max": float(lengths.max()),
            "completion_length/clipped_ratio": float(truncated.mean()),
            "learning_rate": self.scheduler.get_last_lr()[0],
            "grad_norm": mean(stats["grad_norm"]),
            "tokens_generated": int(tokens),
            "time/generate": timings["generate"],
            "time/score": timings["score"],
            "time/train": timings["train"],
            **self.episode_metrics(groups, timings),
            "time/step": step_seconds,
            "tokens_per_second": tokens / timings["generate"] if timings["generate"] > 0 else None,
            "memory/peak_mb": peak_memory_mb(self.device),
            "elapsed_s": time.time() - self.started_at,
        })
        return row

    def episode_metrics(self, groups: list[dict], timings: dict) -> dict:
        """Turns, truncation and failures of the step's episodes, and the environment's time."""
        if self.environment is None:
            return {}
        played = [episode for group in groups for episode in group["episodes"]]
        turns = [episode["turns"] for episode in played]
        return {"episodes/turns/mean": float(np.mean(turns)), "episodes/turns/max": max(turns),
                "episodes/truncated": float(np.mean([episode["truncated"] for episode in played])),
                "episodes/failed": sum(1 for episode in played if episode["problem"]),
                "time/environment": timings["environment"]}

    def warn_if_no_signal(self, row: dict, step: int) -> None:
        """Warn once per streak of NO_SIGNAL_STEPS steps in which no group had a reward spread: every
        advantage was zero and the policy learnt nothing from the rewards."""
        self.flat_steps = self.flat_steps + 1 if row["frac_reward_zero_std"] == 1.0 else 0
        if self.flat_steps == NO_SIGNAL_STEPS:
            self.writer.log(
                f"warning: in the last {NO_SIGNAL_STEPS} steps every completion of each group got the same reward, "
                f"so no advantage was non-zero and nothing was learnt from the rewards. {NO_SIGNAL_ADVICE}", step)

    def dynamic_sampling_metrics(self, stats: dict, groups_kept: int) -> dict:
        if not self.config.grpo.dynamic_sampling:
            return {}
        sampled = int(sum(stats["groups_sampled"]))
        # The trained-on reward leaves the dropped groups out (all right, or all wrong), so it says
        # little about the policy; this mean over everything sampled does.
        scored = [total for total in stats["sampled_totals"] if not math.isnan(total)]
        return {"dynamic_sampling/sampled_groups": sampled, "dynamic_sampling/dropped_groups": sampled - groups_kept,
                "dynamic_sampling/sampled_reward": sum(scored) / len(scored) if scored else None}

    def rollout_records(self, batches: list[MicroBatch]) -> list[dict]:
        group = self.config.sampling.num_generations
        records = []
        for batch in batches:
            for g, prompt in enumerate(batch.prompts):
                rows = slice(g * group, (g + 1) * group)
                records.append({
                    "prompt": datasets.prompt_text_for_display(prompt.messages),
                    "prompt_text": prompt.text,
                    "example": {k: v if isinstance(v, (str, int, float, bool)) or v is None else str(v) for k, v in prompt.example.items()},
                    "completions": batch.rollout.completions[rows],
                    "rewards": {n: batch.rewards[n][rows] for n in self.function_names},
                    "total": batch.total[rows].tolist(),
                    "advantages": batch.advantages[rows].cpu().tolist(),
                    "completion_tokens": batch.rollout.completion_lengths[rows].int().tolist(),
                    "truncated": batch.rollout.truncated[rows].tolist(),
                    "reward_version": self.reward_version.number,
                    **self.sampled_tokens(batch, rows),
                    **({} if batch.rollout.episodes is None else
                       {"episodes": [episode.summary() for episode in batch.rollout.episodes[rows]]}),
                })
        return records

    @staticmethod
    def sampled_tokens(batch: MicroBatch, rows: slice) -> dict:
        """Each completion's tokens as sampled, with their log-probability and entropy under the
        sampling policy: what Inspect shows for any step, without the checkpoint that sampled it. An
        episode's environment tokens are among them, marked 0 in its model_mask."""
        lengths = batch.rollout.sequence_lengths[rows].int().tolist()
        ids = batch.rollout.completion_ids[rows].tolist()
        record = {"completion_ids": [row[:length] for row, length in zip(ids, lengths)]}
        if batch.rollout.episodes is not None:
            record["model_mask"] = [episode.model_mask for episode in batch.rollout.episodes[rows]]
        for key, values in (("logp", batch.sampled_logp), ("entropy", batch.sampled_entropy)):
            if values is not None:
                record[key] = [[round(v, 4) for v in row[:length]] for row, length in zip(values[rows].tolist(), lengths)]
        return record

    # ---- held-out evaluation (rft.held_out) ---------------------------------------------------

    def evaluation_due(self, step: int) -> bool:
        every = self.config.schedule.eval_every
        return bool(self.held_out_rows) and self.processes.is_main and (step % every == 0 or step == self.max_steps)

    def evaluate_held_out(self, step: int) -> None:
        """The policy as it is after `step` (0: before training) on the held-out rows, to eval_metrics.jsonl."""
        self.writer.set_status("running", phase="evaluating")
        self.model.eval()
        summary = held_out.evaluate_rows(self.model, self.tokenizer, self.config, self.held_out_rows, self.rewards,
                                         environment=self.environment)
        row = held_out.metrics_row(step, summary)
        self.writer.append_eval_metrics(row)
        self.trackers.log_metrics(step, row)
        reward = summary["reward"]
        functions = " · ".join(f"{name} {stats['mean']:.3f}" for name, stats in summary["functions"].items())
        self.writer.log(f"held-out: reward {reward['mean']:.3f} (95% {reward['low']:.3f} to {reward['high']:.3f}) "
                        f"· {functions} · {summary['rows']} rows, {summary['seconds']:.0f} s", step)
        self.writer.set_status("running", phase="training")

    # ---- checkpoints ------------------------------------------------------------------------

    def save_checkpoint(self, step: int) -> Path:
        staging = self.writer.checkpoint_staging_dir(step)
        self.model.save_pretrained(staging, selected_adapters=["default"])
        state = {
            "step": step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }
        fault_point("checkpoint", step)
        torch.save(state, staging / TRAINER_STATE_FILE)
        final = self.writer.commit_checkpoint(step, staging)
        self.writer.log(f"checkpoint saved: {final.name}", step)
        return final

    def restore_checkpoint(self) -> int:
        """Load the last complete checkpoint; drop anything written after it. Returns its step."""
        folder = checkpoint_path(self.run_dir)
        if folder is None:
            self.writer.truncate_after(0)
            return 0
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(self.model, load_file(folder / "adapter_model.safetensors"), adapter_name="default")
        state = torch.load(folder / TRAINER_STATE_FILE, weights_only=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.writer.truncate_after(state["step"])
        self.writer.log(f"resumed from {folder.name}")
        return state["step"]

    # ---- the loop -----------------------------------------------------------------------------

    def run(self, resume: bool = False, progress: bool = True) -> None:
        self.started_at = time.time()
        self.writer.clear_stop_request()
        self.writer.set_status("running", pid=os.getpid(), error=None, phase="loading model")
        try:
            if not resume:
                self.writer.discard_warm_start()
            self.processes.wait_for_all()  # no process may find the warm start the main one is discarding
            self.setup()
            start = self.restore_checkpoint() if resume else 0
            if self.processes.launched:  # each process samples with its own random numbers, after a resume too
                seed_everything(int(np.random.SeedSequence([self.config.schedule.seed, self.processes.rank, start])
                                    .generate_state(1)[0]))
            if not resume:
                self.writer.truncate_after(0)
            self.start_rewards(start)
            if self.processes.is_main:
                self.trackers = Trackers(self.config, self.run_dir, self.writer.log)
            self.writer.set_status("running", step=start, max_steps=self.max_steps, phase="training")
            self._loop(start, progress)
        except (StopTraining, sft.StopRequested):
            self.writer.set_status("stopped", phase=None)
        except Exception as exc:
            self.writer.log(traceback.format_exc())
            self.writer.set_status("failed", error=f"{type(exc).__name__}: {exc}", phase=None)
            raise
        else:
            self.writer.log(run_summary(read_metrics(self.run_dir), time.time() - self.started_at, start))
            self.writer.set_status("finished", phase=None)
        finally:
            if hasattr(self, "rewards"):
                self.rewards.close()
            if getattr(self, "environment", None) is not None:
                self.environment.close()
            if hasattr(self, "trackers"):
                self.trackers.close()

    def _loop(self, start: int, progress: bool) -> None:
        cfg = self.config
        main = self.processes.is_main
        bar = tqdm(total=self.max_steps, initial=start, disable=not (progress and main), unit="step", dynamic_ncols=True)
        last_saved = start
        self.flat_steps = 0
        self.writer.take_lines()  # a follower's set-up lines repeat the main process's
        if start == 0 and self.evaluation_due(0):
            self.evaluate_held_out(0)
        for step in range(start + 1, self.max_steps + 1):
            step_started = time.perf_counter()
            self.take_reward_change(step)
            timings = {"generate": 0.0, "environment": 0.0, "score": 0.0, "train": 0.0}
            batches = [self.rollout_and_score(step, micro, timings) for micro in range(cfg.optim.gradient_accumulation_steps)]
            self.assign_advantages(batches)
            stats = self.optimise(batches, timings)
            stats["groups_sampled"] = [batch.groups_sampled for batch in batches]
            stats["sampled_totals"] = [total for batch in batches for total in batch.sampled_totals]
            fault_point("optimizer", step)
            outcomes = self.processes.gather_at_main(StepOutcome(
                self.rollout_records(batches), [bool(flag) for b in batches for flag in b.zero_std_groups], stats,
                self.writer.take_lines()))
            stop = self.processes.from_main(self.writer.stop_requested())
            if main:
                outcome = StepOutcome.pooled(outcomes)
                for line in outcome.log_lines:
                    self.writer.log(line)
                row = self.metrics_row(step, outcome, timings, time.perf_counter() - step_started)
                self.writer.append_rollouts(step, outcome.groups)
                fault_point("metrics", step)
                self.writer.append_metrics(row)
                self.trackers.log_metrics(step, row)
                self.trackers.log_completions(step, outcome.groups)
                self.writer.log(step_log_line(row), step)
                self.warn_if_no_signal(row, step)
                bar.update(1)
                bar.set_postfix(reward=f"{row['reward']:.3f}", step_s=f"{row['time/step']:.1f}")
            self.step = step
            if step == self.max_steps or stop or (cfg.schedule.save_every and step % cfg.schedule.save_every == 0):
                if main:  # every process holds the same adapter
                    self.save_checkpoint(step)
                last_saved = step
            if self.evaluation_due(step):
                self.evaluate_held_out(step)
            if main:
                self.writer.set_status("stopping" if stop else "running", step=step, last_reward=row["reward"],
                                       last_saved=last_saved)
            if stop:
                bar.close()
                raise StopTraining()
        bar.close()


def train(config: RunConfig, run_dir: str | Path, resume: bool = False, progress: bool = True,
          processes: Processes = Processes()) -> Path:
    """Run (or resume) training in this process (one of `processes`); returns the run directory."""
    run_dir = Path(run_dir)
    if processes.is_main and (not resume or not (run_dir / "config.yaml").exists()):
        RunWriter(run_dir).create(config)
    processes.wait_for_all()
    if resume and read_status(run_dir).get("state") == "finished":
        return run_dir
    Trainer(config, run_dir, processes).run(resume=resume, progress=progress)
    return run_dir
