"""The arithmetic task's recipes: SFT then GRPO, GRPO alone from the base model, and a calculator tool."""

from __future__ import annotations

from rft.config import (
    DataConfig,
    EnvironmentConfig,
    GRPOConfig,
    OptimConfig,
    RewardsConfig,
    RunConfig,
    SamplingConfig,
    ScheduleConfig,
    SFTConfig,
)
from rft.tasks.arithmetic import environment_source, reward_source, tool_reward_source


def arithmetic() -> RunConfig:
    """Generated integer arithmetic (e.g. 37 + 18 * 4): a format reward and an exact-answer reward.

    Prompts are short (~90 tokens) and answers shorter, so SFT and GRPO steps are several times
    cheaper than Wordle's.
    """
    return RunConfig(
        name="arithmetic",
        data=DataConfig(preset="arithmetic", max_prompt_length=256),
        rewards=RewardsConfig(source=reward_source(), weights={"format_progress": 0.0}),
        # GRPO after the warm start, as measured best on 500 held-out problems (README, "Arithmetic"):
        # the warm start is nearly deterministic, so groups of 16 and dynamic sampling to find the
        # groups that disagree, 8 prompts a step (two micro-batches of 4) so the updates to the digits
        # average over many sums, and a KL term to keep the sums it already gets right.
        sampling=SamplingConfig(num_generations=16, max_completion_length=64, temperature=1.0),
        grpo=GRPOConfig(beta=0.04, loss_type="dapo", dynamic_sampling=True),
        optim=OptimConfig(learning_rate=1e-4, prompts_per_step=4, gradient_accumulation_steps=2),
        schedule=ScheduleConfig(max_steps=24, save_every=8),
        sft=SFTConfig(enabled=True, examples=512, epochs=1.0, learning_rate=5e-4, batch_size=16, max_length=256),
    )


def arithmetic_zero() -> RunConfig:
    """GRPO alone, from the base model, with no demonstration: the course's point that RL learns
    from rewards. The base model never writes the whole answer format by chance, so format_progress
    (a quarter per step towards it) weighs 1 and gives its groups a spread to learn from."""
    config = arithmetic()
    config.name = "arithmetic-zero"
    config.sft.enabled = False
    config.rewards.weights = {"format_progress": 1.0}
    # DAPO's choices: no KL term (nothing to stay close to), token-level averaging, and dynamic
    # sampling, since early on most groups score all alike; 4 prompts a step for a steadier signal,
    # in groups of 8, as its README figures were measured.
    config.sampling.num_generations = 8
    config.grpo = GRPOConfig(beta=0.0, loss_type="dapo", dynamic_sampling=True)
    config.optim = OptimConfig(learning_rate=3e-4, prompts_per_step=4)
    config.schedule = ScheduleConfig(max_steps=30, save_every=10)
    return config


def arithmetic_tools() -> RunConfig:
    """Arithmetic with a calculator tool, played as an environment (rft.tasks.arithmetic.environment): the
    model may send the expression to the calculator, reads its value in the tool's reply, and
    answers. The warm start shows that conversation; GRPO then rewards the right final answer."""
    config = arithmetic()
    config.name = "arithmetic-tools"
    config.data = DataConfig(preset="arithmetic-tools", max_prompt_length=256)
    config.rewards = RewardsConfig(source=tool_reward_source(), weights={"used_calculator": 0.0})
    config.sampling = SamplingConfig(num_generations=8, max_completion_length=48, temperature=1.0)
    # The settings its README figures were measured with: once the warm start calls the calculator,
    # every group scores alike, so GRPO adds little and small plain steps suffice.
    config.grpo = GRPOConfig(beta=0.04, loss_type="grpo")
    config.optim = OptimConfig(learning_rate=5e-5, prompts_per_step=2)
    config.schedule = ScheduleConfig(max_steps=40, save_every=10)
    config.environment = EnvironmentConfig(source=environment_source(), max_turns=3, max_episode_tokens=192)
    return config
