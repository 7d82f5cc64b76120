"""Multi-turn environments: the runtime's isolation, episodes as token sequences, their masks and
log-probabilities, faulty environment code, and learning on a toy two-turn environment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tiny_model
import torch

from rft import data as datasets
from rft import models
from rft.config import (
    ConfigError,
    DataConfig,
    EnvironmentConfig,
    GRPOConfig,
    ModelConfig,
    OptimConfig,
    RewardsConfig,
    RunConfig,
    SamplingConfig,
    ScheduleConfig,
)
from rft.environments import episodes
from rft.environments.runtime import EnvironmentCodeError, EnvironmentRuntime, analyse_environment
from rft.grpo.sampler import completion_logprobs, rollout_from_episodes
from rft.grpo.trainer import micro_batch_loss, train
from rft.runs import read_metrics, read_rollouts

TWO_TURNS = '''
class TwoTurns:
    """Asks twice; rewards a short second reply."""

    def reset(self, example):
        self.replies = []
        return f"Topic: {example['topic']}."

    def step(self, reply):
        self.replies.append(reply)
        return "Again, shorter." if len(self.replies) < 2 else None

    def reward(self):
        return -len(self.replies[-1]) / 20 if len(self.replies) == 2 else -2.0
'''


@pytest.fixture(scope="module")
def stopping_model_dir(tmp_path_factory, bundled_model_dir) -> Path:
    """The tiny random model, with replies that end after about ten tokens."""
    return tiny_model.build_tiny_model(tmp_path_factory.mktemp("stopping-model"), bundled_model_dir, stop_every=10)


@pytest.fixture(scope="module")
def topics_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "topics.jsonl"
    rows = [{"prompt": f"Say something about topic {i}.", "topic": f"t{i}"} for i in range(8)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def env_config(model_dir, data_file, source=TWO_TURNS, **overrides) -> RunConfig:
    config = RunConfig(
        name="env",
        model=ModelConfig(name_or_path=str(model_dir), device="cpu"),
        data=DataConfig(preset=None, path=str(data_file)),
        rewards=RewardsConfig(source="def turns(prompt, completion, example):\n"
                                     "    return float(example['episode']['turns'])\n",
                              weights={"turns": 0.0}, timeout_s=5.0),
        sampling=SamplingConfig(num_generations=4, max_completion_length=8, top_k=10),
        optim=OptimConfig(learning_rate=1e-2),
        schedule=ScheduleConfig(max_steps=2, save_every=0),
        environment=EnvironmentConfig(source=source, max_turns=3, max_episode_tokens=64, timeout_s=2.0),
    )
    return config.with_overrides(overrides.get("set", []))


# ---- the code: analysis and runtime -------------------------------------------------------------


def test_analysis_finds_the_environment_class_and_names_what_is_wrong():
    info = analyse_environment(TWO_TURNS)
    assert (info.class_name, info.has_reward) == ("TwoTurns", True)
    with pytest.raises(EnvironmentCodeError, match="reset"):
        analyse_environment("class Game:\n    def step(self, reply):\n        return None\n")
    with pytest.raises(EnvironmentCodeError, match="class_name"):
        analyse_environment(TWO_TURNS + TWO_TURNS.replace("TwoTurns", "Other"))
    assert analyse_environment(TWO_TURNS + TWO_TURNS.replace("TwoTurns", "Other"), "Other").class_name == "Other"
    with pytest.raises(EnvironmentCodeError, match="line 1"):
        analyse_environment("class Game(:\n")


def test_config_validation_reports_environment_code_problems(tiny_model_dir, topics_file):
    with pytest.raises(ConfigError, match="environment.source: no environment class"):
        env_config(tiny_model_dir, topics_file, source="x = 1\n").validate()
    with pytest.raises(ConfigError, match="environment.max_turns"):
        env_config(tiny_model_dir, topics_file, set=["environment.max_turns=0"]).validate()


def test_runtime_keeps_one_instance_per_episode_and_checks_what_it_returns():
    source = '''
class Counter:
    def reset(self, example):
        self.count = example["start"]
    def step(self, reply):
        self.count += 1
        if reply == "bad type":
            return 42
        if reply == "tool":
            return {"role": "tool", "content": str(self.count)}
        return None if reply == "stop" else f"count {self.count}"
    def get_reward(self):
        return self.count
'''
    with EnvironmentRuntime(source) as runtime:
        first, outcome = runtime.reset({"start": 10})
        assert outcome.value is None and outcome.problem is None
        second, _ = runtime.reset({"start": 100})
        assert runtime.step(first, "go").value == {"role": "user", "content": "count 11"}
        assert runtime.step(second, "tool").value == {"role": "tool", "content": "101"}
        assert runtime.step(first, "stop").value is None
        assert runtime.reward(first).value == 12.0 and runtime.reward(second).value == 101.0  # TRL's get_reward
        wrong = runtime.step(second, "bad type")
        assert wrong.value is None and "step returned int 42" in wrong.problem
        assert runtime.reward(second).problem == wrong.problem  # a failed episode stays failed


def test_a_hanging_episode_fails_alone_and_the_others_are_replayed_in_a_new_worker():
    source = '''
import time

class Echo:
    def reset(self, example):
        self.seen = [example["name"]]
    def step(self, reply):
        if reply == "hang":
            time.sleep(60)
        self.seen.append(reply)
        return " ".join(self.seen)
'''
    with EnvironmentRuntime(source, timeout_s=1.0) as runtime:
        calm, _ = runtime.reset({"name": "calm"})
        stuck, _ = runtime.reset({"name": "stuck"})
        assert runtime.step(calm, "one").value["content"] == "calm one"
        hung = runtime.step(stuck, "hang")
        assert "timed out after 1 s" in hung.problem
        # The calm episode's state came back in the new worker: its history continues.
        assert runtime.step(calm, "two").value["content"] == "calm one two"


# ---- episodes as tokens -----------------------------------------------------------------------


def play_two_turns(model, tokenizer, config: RunConfig, rows: list[dict]):
    messages = [datasets.to_messages(row, config.data) for row in rows]
    examples = [datasets.example_of(row, config.data) for row in rows]
    with EnvironmentRuntime(config.environment.source) as runtime:
        return episodes.play(model, tokenizer, messages, examples, config.sampling, config.environment, runtime)


def test_episode_tokens_are_the_chat_template_rendering_of_the_whole_conversation(stopping_model_dir, topics_file):
    config = env_config(stopping_model_dir, topics_file)
    tokenizer = models.load_tokenizer(config.model.name_or_path)
    model = models.load_base_model(config.model)
    torch.manual_seed(0)
    batch = play_two_turns(model, tokenizer, config, [{"prompt": "Hello.", "topic": "cats"}])
    complete = [e for e in batch.episodes if e.turns == 2 and not e.truncated]
    assert complete, "no episode of two finished turns to check"
    episode = complete[0]
    conversation = batch.prompt_messages[0] + episode.messages
    assert batch.prompt_messages[0][-1]["content"].endswith("Topic: cats.")  # reset's text joins the user message
    expected = tokenizer.apply_chat_template(conversation, tokenize=False)
    played = batch.prompt_texts[0] + tokenizer.decode(episode.token_ids)
    # The template closes the last reply with "<|im_end|>\n"; the episode ends with the reply's own end
    # token (this model's replies end with any of its stop tokens, "<|im_end|>" among them).
    assert expected.startswith(played) and expected[len(played):] in ("\n", "<|im_end|>\n")
    model_text = tokenizer.decode([t for t, m in zip(episode.token_ids, episode.model_mask) if m])
    environment_text = tokenizer.decode([t for t, m in zip(episode.token_ids, episode.model_mask) if not m])
    assert "Again, shorter." in environment_text and "Again, shorter." not in model_text


@pytest.mark.parametrize("which", ["tiny", "bundled"])
def test_episode_logprobs_over_the_cached_prompt_equal_a_plain_forward(stopping_model_dir, bundled_model_dir,
                                                                       topics_file, which):
    model_dir = stopping_model_dir if which == "tiny" else bundled_model_dir
    config = env_config(model_dir, topics_file, set=["environment.max_turns=3", "sampling.max_completion_length=24",
                                                     "sampling.num_generations=2", "environment.max_episode_tokens=128"])
    tokenizer = models.load_tokenizer(config.model.name_or_path)
    model = models.load_base_model(config.model)
    torch.manual_seed(1)
    rows = [{"prompt": "Name a colour, in one word.", "topic": "cats"},
            {"prompt": "Tell me the name of one animal, in a single word please.", "topic": "dogs"}]
    batch = play_two_turns(model, tokenizer, config, rows)
    rollout = rollout_from_episodes(tokenizer, batch, config.sampling.num_generations, torch.device("cpu"))
    lengths = {len(e.token_ids) for e in batch.episodes}
    assert len(lengths) > 1, "the episodes should differ in length"
    with torch.no_grad():
        logp, _ = completion_logprobs(model, rollout, temperature=1.0)
        for row, episode in enumerate(batch.episodes):
            prompt = tokenizer(batch.prompt_texts[episode.group], add_special_tokens=False).input_ids
            ids = torch.tensor([prompt + episode.token_ids])
            logits = model(input_ids=ids).logits[0, len(prompt) - 1:-1]
            plain = torch.log_softmax(logits.float(), -1).gather(-1, ids[0, len(prompt):, None]).squeeze(-1)
            torch.testing.assert_close(logp[row, :len(episode.token_ids)], plain, atol=2e-4, rtol=1e-4)


def test_environment_tokens_do_not_reach_the_loss(stopping_model_dir, topics_file):
    config = env_config(stopping_model_dir, topics_file)
    tokenizer = models.load_tokenizer(config.model.name_or_path)
    model = models.load_base_model(config.model)
    torch.manual_seed(0)
    batch = play_two_turns(model, tokenizer, config, [{"prompt": "Hello.", "topic": "cats"}])
    rollout = rollout_from_episodes(tokenizer, batch, config.sampling.num_generations, torch.device("cpu"))
    environment_tokens = (rollout.attention_mask - rollout.completion_mask).bool()
    assert environment_tokens.any()
    logp, _ = completion_logprobs(model, rollout, temperature=1.0)
    advantages = torch.linspace(-1, 1, logp.shape[0])
    reference = logp.detach() - 0.1

    def loss(values):
        return micro_batch_loss(GRPOConfig(beta=0.04), 8, values, values.detach(), reference, advantages,
                                rollout.completion_mask, None, float(rollout.completion_mask.sum()), 1).loss

    perturbed = logp + environment_tokens.float() * torch.randn_like(logp) * 5
    assert loss(perturbed).item() == pytest.approx(loss(logp).item(), abs=1e-7)
    variable = logp.detach().clone().requires_grad_(True)
    loss(variable).backward()
    assert variable.grad[environment_tokens].abs().max() == 0
    assert variable.grad[rollout.completion_mask.bool()].abs().max() > 0


# ---- training on episodes ---------------------------------------------------------------------


def test_a_run_trains_on_episodes_and_records_them(tmp_path, stopping_model_dir, topics_file):
    run_dir = train(env_config(stopping_model_dir, topics_file), tmp_path / "run", progress=False)
    metrics = read_metrics(run_dir)
    assert metrics["step"].tolist() == [1, 2]
    for key in ("rewards/environment/mean", "episodes/turns/mean", "episodes/truncated", "episodes/failed",
                "time/environment"):
        assert key in metrics.columns, key
    group = read_rollouts(run_dir)["groups"][0]
    assert group["prompt"].endswith("Topic: " + group["example"]["topic"] + ".")
    assert all(e["turns"] == len(e["replies"]) for e in group["episodes"])
    for ids, mask in zip(group["completion_ids"], group["model_mask"]):
        assert len(ids) == len(mask)
    assert group["rewards"]["turns"] == [float(e["turns"]) for e in group["episodes"]]


FAULTS = {
    "raises": ("raise RuntimeError('broken game')", "RuntimeError: broken game"),
    "hangs": ("import time; time.sleep(30)", "timed out after 1 s"),
    "wrong type": ("return 3.5", "step returned float 3.5"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_faulty_environment_code_fails_its_episodes_and_the_run_goes_on(tmp_path, stopping_model_dir, topics_file,
                                                                        fault):
    statement, message = FAULTS[fault]
    source = TWO_TURNS.replace('        self.replies.append(reply)\n',
                               f'        self.replies.append(reply)\n        if "{fault}" == "{fault}":\n'
                               f'            {statement}\n')
    config = env_config(stopping_model_dir, topics_file, source=source,
                        set=["schedule.max_steps=1", "environment.timeout_s=1", "optim.prompts_per_step=1",
                             "sampling.max_completion_length=32"])
    run_dir = train(config, tmp_path / "run", progress=False)
    metrics = read_metrics(run_dir)
    assert metrics["step"].tolist() == [1]
    group = read_rollouts(run_dir)["groups"][0]
    failed = [e for e in group["episodes"] if e["problem"]]
    assert failed and all(message in e["problem"] for e in failed)
    assert metrics["episodes/failed"].iloc[0] == len(failed)
    assert message in (run_dir / "logs.txt").read_text()


def test_an_environment_that_never_ends_is_cut_at_max_turns(tmp_path, stopping_model_dir, topics_file):
    source = TWO_TURNS.replace('return "Again, shorter." if len(self.replies) < 2 else None', 'return "More."')
    config = env_config(stopping_model_dir, topics_file, source=source,
                        set=["schedule.max_steps=1", "environment.max_turns=2", "environment.max_episode_tokens=512"])
    run_dir = train(config, tmp_path / "run", progress=False)
    played = [e for group in read_rollouts(run_dir)["groups"] for e in group["episodes"]]
    assert all(e["turns"] <= 2 and e["truncated"] for e in played)
    assert any(e["turns"] == 2 for e in played)


def test_learning_short_second_replies_raises_the_environment_reward(tmp_path, stopping_model_dir, topics_file):
    config = env_config(stopping_model_dir, topics_file,
                        set=["schedule.max_steps=25", "sampling.num_generations=8", "optim.prompts_per_step=2",
                             "grpo.use_bias_correction_kl=false"])
    run_dir = train(config, tmp_path / "run", progress=False)
    rewards = read_metrics(run_dir)["rewards/environment/mean"].tolist()
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert last > first + 0.5, f"the environment's reward did not rise: first steps {first:.3f}, last {last:.3f}"


def test_a_demonstrated_conversation_learns_the_assistant_turns_only(stopping_model_dir):
    from rft.environments.episodes import TurnRenderer
    from rft.sft import IGNORED_LABEL, Example, collate, conversation_tokens

    tokenizer = models.load_tokenizer(str(stopping_model_dir))
    prompt_messages = [{"role": "user", "content": "Play."}, {"role": "assistant", "content": "Let me think."}]
    conversation = [{"role": "assistant", "content": " first move"}, {"role": "user", "content": "Your turn."},
                    {"role": "assistant", "content": " second move"}]
    prompt = tokenizer(datasets.render_prompt(tokenizer, prompt_messages), add_special_tokens=False).input_ids
    ids, mask = conversation_tokens(TurnRenderer(tokenizer), conversation, "Let me think.")
    learnt = tokenizer.decode([t for t, m in zip(ids, mask) if m])
    assert learnt == " first move<|im_end|> second move<|im_end|>"
    # Laid out as the chat template renders the whole conversation, the prefix opening every turn.
    whole = prompt_messages[:1] + [{"role": "assistant", "content": "Let me think. first move"},
                                   conversation[1], {"role": "assistant", "content": "Let me think. second move"}]
    assert tokenizer.decode(prompt + ids) + "\n" == tokenizer.apply_chat_template(whole, tokenize=False)
    labels = collate([Example(prompt + ids, len(prompt), mask)], tokenizer.pad_token_id)["labels"][0]
    assert tokenizer.decode(labels[labels != IGNORED_LABEL]) == learnt


def test_held_out_evaluation_plays_one_greedy_episode_per_row(stopping_model_dir, topics_file):
    from rft import held_out
    from rft.rewards import RewardRuntime

    config = env_config(stopping_model_dir, topics_file)
    tokenizer = models.load_tokenizer(config.model.name_or_path)
    model = models.load_base_model(config.model)
    rows = [{"prompt": "Hello.", "topic": "cats"}, {"prompt": "Hi there.", "topic": "dogs"}]
    with RewardRuntime(config.rewards.source, config.rewards.weights) as rewards:
        first = held_out.evaluate_rows(model, tokenizer, config, rows, rewards)
        again = held_out.evaluate_rows(model, tokenizer, config, rows, rewards)
    assert first["rows"] == 2 and set(first["functions"]) == {"turns", "environment"}
    assert [d["episode"]["replies"] for d in first["details"]] == [d["episode"]["replies"] for d in again["details"]]
    for detail in first["details"]:
        assert detail["rewards"]["turns"] == detail["episode"]["turns"]
        # The environment's reward weighs 1, turns 0.
        assert detail["total"] == pytest.approx(detail["rewards"]["environment"])


def test_inspect_shows_an_episode_with_the_environment_tokens_out_of_the_loss(tmp_path, stopping_model_dir,
                                                                              topics_file):
    from rft.inspect_tokens import PolicyCache, inspect_completion

    config = env_config(stopping_model_dir, topics_file, set=["schedule.max_steps=1", "schedule.save_every=1",
                                                             "sampling.max_completion_length=32"])
    run_dir = train(config, tmp_path / "run", progress=False)
    groups = read_rollouts(run_dir, 1)["groups"]
    group, sample = next((g, s) for g, group in enumerate(groups) for s, mask in enumerate(group["model_mask"])
                         if 0 in mask)
    report = inspect_completion(PolicyCache(), run_dir, 1, group, sample)
    tokens = report.tokens
    environment = tokens["environment"]
    assert environment.any() and (~environment).any()
    assert (tokens.loc[environment, "contribution"] == 0).all() and (tokens.loc[environment, "push"] == 0).all()
    assert not tokens.loc[environment, "trained"].any()
    assert (tokens.loc[~environment, "push"] != 0).any()
    assert "Again, shorter." in "".join(tokens.loc[environment, "token"])


def test_turns_continue_the_kept_cache_as_a_fresh_generation_from_the_whole_conversation(stopping_model_dir,
                                                                                         topics_file):
    from rft import generation
    from rft.grpo.sampler import eos_token_ids

    config = env_config(stopping_model_dir, topics_file,
                        set=["sampling.temperature=0", "sampling.max_completion_length=24", "environment.max_turns=3",
                             "environment.max_episode_tokens=256"])
    tokenizer = models.load_tokenizer(config.model.name_or_path)
    model = models.load_base_model(config.model)
    rows = [{"prompt": "Hello.", "topic": "cats"}, {"prompt": "Something longer to say, please.", "topic": "dogs"}]
    batch = play_two_turns(model, tokenizer, config, rows)
    eos = eos_token_ids(model, tokenizer)
    checked = 0
    for episode in batch.episodes:
        prompt = tokenizer(batch.prompt_texts[episode.group], add_special_tokens=False).input_ids
        starts = [k for k, m in enumerate(episode.model_mask) if m and (k == 0 or not episode.model_mask[k - 1])]
        for start in starts:
            end = start
            while end < len(episode.model_mask) and episode.model_mask[end]:
                end += 1
            ids, mask = generation.pack_prompts([prompt + episode.token_ids[:start]], tokenizer.pad_token_id)
            fresh = generation.generate(model, ids, mask, 1, 24, eos, tokenizer.pad_token_id, temperature=0.0)[0]
            assert fresh.tolist()[:end - start] == episode.token_ids[start:end]
            checked += 1
    assert checked > len(batch.episodes), "some episodes should have had a second turn"


def test_compare_plays_each_policys_episodes_with_the_same_seed(tmp_path, stopping_model_dir, topics_file):
    from rft.compare import GenerationSettings, compare_policies, dataset_prompts, rollouts_at_step
    from rft.policies import Policy, PolicyCache

    config = env_config(stopping_model_dir, topics_file, set=["schedule.max_steps=1", "schedule.save_every=1"])
    run_dir = train(config, tmp_path / "run", progress=False)
    prompt = dataset_prompts(config)[0]
    base = Policy(str(stopping_model_dir), None, "base")
    settings = GenerationSettings(num_completions=3, max_new_tokens=16, seed=7)
    first, again = compare_policies(PolicyCache(), [base, base], prompt, config, settings)
    assert first.completions == again.completions and len(first.completions) == 3
    assert all(text.startswith("[model] ") for text in first.completions)
    assert set(first.scores) == {"turns", "environment"}
    assert [s == s for s in first.totals] == [True] * 3  # every episode scored
    stored = rollouts_at_step(run_dir, 1, read_rollouts(run_dir, 1)["groups"][0]["prompt_text"])
    assert all(text.startswith("[model] ") for text in stored.completions)


NUMBERS_TO_REPEAT = '''
class Numbers:
    """Asks for three numbers back, one reply each."""

    def reset(self, example):
        self.replies = []
        return None

    def step(self, reply):
        self.replies.append(reply)
        return f"Repeat this number: {[45, 78][len(self.replies) - 1]}" if len(self.replies) < 3 else None
'''


def test_turn_by_turn_play_continues_the_conversation_that_training_plays(bundled_model_dir):
    """next_reply, given an episode's first replies, writes the reply the trainer's rollout code (kept
    caches, no text round trip) wrote next: greedy, with the bundled model, whose short replies come
    back unchanged from their text. A person playing against a policy plays in its training setting."""
    model, tokenizer = models.load_for_inference(str(bundled_model_dir))
    prompt = [{"role": "user", "content": "Repeat this number: 12"}]
    greedy = SamplingConfig(num_generations=1, max_completion_length=24, temperature=0.0)
    limits = EnvironmentConfig(source=NUMBERS_TO_REPEAT, max_turns=3, max_episode_tokens=200)
    with EnvironmentRuntime(NUMBERS_TO_REPEAT) as runtime:
        batch = episodes.play(model, tokenizer, [prompt], [{}], greedy, limits, runtime)
        played = batch.episodes[0]
        assert played.turns == 3 and not played.truncated and played.problem is None
        assert len(set(played.replies)) == 3  # each reply answers the environment's latest message
        for turn in range(3):
            context, reply = episodes.next_reply(model, tokenizer, prompt, {}, played.replies[:turn], greedy, runtime)
            assert reply == played.replies[turn], turn
            assert context.startswith(batch.prompt_texts[0]) and context.count("Repeat this number") == turn + 1
        assert episodes.next_reply(model, tokenizer, prompt, {}, played.replies, greedy, runtime) is None
