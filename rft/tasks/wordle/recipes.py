"""The Wordle task's recipes: the course's (game states answered once), its reward-hack guard, and
whole games played in the Wordle environment."""

from __future__ import annotations

from rft.config import (
    DataConfig,
    EnvironmentConfig,
    GRPOConfig,
    ModelConfig,
    OptimConfig,
    RewardsConfig,
    RunConfig,
    SamplingConfig,
    ScheduleConfig,
    SFTConfig,
)
from rft.tasks.wordle import environment_source, game_reward_source, reward_source


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
    by the game's feedback as the next user message (rft.tasks.wordle.environment), and GRPO compares
    whole games. Rewards per game: the environment's win (1 or 0), guesses_used for a win, and the
    course's three rewards averaged over the game's guesses.

    The warm start is the solver's games, learnt as conversations (its turns only): 192 of them
    took 24 min on the 2-core CPU (beside other jobs). A game is up to six replies, so a step of 2 prompts x 6 games
    generates and trains on about 5x the tokens of a single-turn step, and costs about 5x: 101 to
    118 s a step with bf16 on an AVX512-BF16 CPU (README, "The two modes side by side"; 6.4 min
    on the machine the 6 steps were sized for). It trains on up to 12 x ~1,500 tokens at once:
    gradient checkpointing keeps the peak at 6.4 GB and cost no time there (without it, 14.9 GB).
    """
    return RunConfig(
        name="wordle-game",
        model=ModelConfig(gradient_checkpointing=True),
        data=DataConfig(preset="wordle-game", max_prompt_length=1024),
        rewards=RewardsConfig(source=game_reward_source(), weights={"feedback_per_turn": 0.5}),
        sampling=SamplingConfig(num_generations=6, max_completion_length=128, temperature=1.0),
        grpo=GRPOConfig(beta=0.04, loss_type="dapo"),
        optim=OptimConfig(learning_rate=5e-5, prompts_per_step=2),
        schedule=ScheduleConfig(max_steps=6, save_every=2),
        sft=SFTConfig(enabled=True, examples=192, epochs=1.0, learning_rate=5e-4, batch_size=4, max_length=1536),
        environment=EnvironmentConfig(source=environment_source(), max_turns=6, max_episode_tokens=1024),
    )
