"""Recipe presets: a complete RunConfig for a task (dataset, reward code, hyperparameters)."""

from __future__ import annotations

from collections.abc import Callable

from rft.config import (
    ConfigError,
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


def wordle() -> RunConfig:
    """The course's Wordle task: its prompt format, its three reward functions, and a recipe for
    the bundled 135M model on a CPU: an SFT warm start on solver demonstrations (the course found
    SFT then GRPO far better than GRPO alone), then GRPO from the warm-started adapter.

    The sizes fit an hour of a 2-core CPU: with bf16 matmuls an SFT demonstration costs about
    1.4 s there (the ~330-token system prompt is computed once per batch, then ~150 tokens of
    history and ~60 of demonstration), so 1,536 demonstrations take about 37 minutes, and 30 GRPO
    steps of 2 prompts x 6 completions (~35 s each) the rest. Demonstrations are at most ~100
    tokens, so 128 completion tokens leave room without paying for rambling. GRPO's learning rate
    is LoRA's usual order (a full fine-tune would use ~1e-6).
    """
    from rft.wordle import reward_source

    return RunConfig(
        name="wordle",
        data=DataConfig(preset="wordle", max_prompt_length=1024),
        rewards=RewardsConfig(source=reward_source(), weights={"fits_feedback": 0.0}),
        sampling=SamplingConfig(num_generations=6, max_completion_length=128, temperature=1.0),
        grpo=GRPOConfig(beta=0.04, loss_type="grpo"),
        optim=OptimConfig(learning_rate=5e-5, prompts_per_step=2),
        schedule=ScheduleConfig(max_steps=30, save_every=10),
        sft=SFTConfig(enabled=True, examples=1536, epochs=1.0, learning_rate=5e-4, batch_size=8, max_length=640),
    )


def wordle_guarded() -> RunConfig:
    """The wordle recipe with the reward-hack guard on: fits_feedback (1.0 for an allowed word that
    could still be the secret) weighs 1, so replaying one safe word no longer pays as much as a
    guess that uses the feedback."""
    config = wordle()
    config.name = "wordle-guarded"
    config.rewards.weights = {"fits_feedback": 1.0}
    return config


def wordle_game() -> RunConfig:
    """Wordle played whole: the model makes up to six guesses in one conversation, each answered
    by the game's feedback as the next user message (rft.wordle.environment), and GRPO compares
    whole games. Rewards per game: the environment's win (1 or 0), guesses_used for a win, and the
    course's three rewards averaged over the game's guesses.

    The warm start is the solver's games, learnt as conversations (its turns only). A game is up
    to six replies, so a step of 2 prompts x 6 games generates several times the tokens of a
    single-turn step; 20 steps fit the hour beside the warm start.
    """
    from rft.wordle import environment_source, game_reward_source

    return RunConfig(
        name="wordle-game",
        data=DataConfig(preset="wordle-game", max_prompt_length=1024),
        rewards=RewardsConfig(source=game_reward_source(), weights={"feedback_per_turn": 0.5}),
        sampling=SamplingConfig(num_generations=6, max_completion_length=128, temperature=1.0),
        grpo=GRPOConfig(beta=0.04, loss_type="dapo"),
        optim=OptimConfig(learning_rate=5e-5, prompts_per_step=2),
        schedule=ScheduleConfig(max_steps=20, save_every=5),
        sft=SFTConfig(enabled=True, examples=384, epochs=1.0, learning_rate=5e-4, batch_size=4, max_length=1536),
        environment=EnvironmentConfig(source=environment_source(), max_turns=6, max_episode_tokens=1024),
    )


def arithmetic() -> RunConfig:
    """Generated integer arithmetic (e.g. 37 + 18 * 4): a format reward and an exact-answer reward.

    Prompts are short (~90 tokens) and answers shorter, so SFT and GRPO steps are several times
    cheaper than Wordle's.
    """
    from rft.arithmetic import reward_source

    return RunConfig(
        name="arithmetic",
        data=DataConfig(preset="arithmetic", max_prompt_length=256),
        rewards=RewardsConfig(source=reward_source(), weights={"format_progress": 0.0}),
        sampling=SamplingConfig(num_generations=8, max_completion_length=64, temperature=1.0),
        grpo=GRPOConfig(beta=0.04, loss_type="grpo"),
        optim=OptimConfig(learning_rate=5e-5, prompts_per_step=2),
        schedule=ScheduleConfig(max_steps=40, save_every=10),
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
    # sampling, since early on most groups score all alike; 4 prompts a step for a steadier signal.
    config.grpo = GRPOConfig(beta=0.0, loss_type="dapo", dynamic_sampling=True)
    config.optim = OptimConfig(learning_rate=3e-4, prompts_per_step=4)
    config.schedule = ScheduleConfig(max_steps=30, save_every=10)
    return config


def arithmetic_tools() -> RunConfig:
    """Arithmetic with a calculator tool, played as an environment (rft.arithmetic.environment): the
    model may send the expression to the calculator, reads its value in the tool's reply, and
    answers. The warm start shows that conversation; GRPO then rewards the right final answer."""
    from rft.arithmetic import environment_source, tool_reward_source

    config = arithmetic()
    config.name = "arithmetic-tools"
    config.data = DataConfig(preset="arithmetic-tools", max_prompt_length=256)
    config.rewards = RewardsConfig(source=tool_reward_source(), weights={"used_calculator": 0.0})
    config.sampling.max_completion_length = 48
    config.environment = EnvironmentConfig(source=environment_source(), max_turns=3, max_episode_tokens=192)
    return config


PRESETS: dict[str, Callable[[], RunConfig]] = {"wordle": wordle, "wordle-guarded": wordle_guarded,
                                               "wordle-game": wordle_game, "arithmetic": arithmetic,
                                               "arithmetic-zero": arithmetic_zero, "arithmetic-tools": arithmetic_tools}


def preset_config(name: str) -> RunConfig:
    """The recipe of a preset, or of a reasoning-gym task named rg:<task>."""
    from rft import task_library

    if task_library.is_library_task(name):
        return task_library.recipe(name)
    if name not in PRESETS:
        raise ConfigError([f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}, or a reasoning-gym task "
                           "as rg:<task> (e.g. rg:chain_sum)"])
    return PRESETS[name]()
