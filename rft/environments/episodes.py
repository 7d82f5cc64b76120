"""Episodes: G interactions per prompt between the policy and an environment, turn by turn.

Each turn, every live episode's reply is sampled in one batch by the rollout generator
(rft.generation) over the episode so far; the environment answers each reply, and its message,
rendered by the chat template, is appended as context. An episode is one token sequence after its
prompt: the model's replies (trained on) and the environment's messages (context only), with a
mask telling them apart, so the trainer scores and trains it like a single-turn completion.

Limits: `max_turns` replies, `sampling.max_completion_length` tokens a reply, `max_episode_tokens`
after the prompt. An episode a limit cuts short (a reply without EOS, the last turn reached while
the environment still answers, the token budget spent) is marked truncated.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field

import torch

from rft import data as datasets
from rft import generation
from rft.config import EnvironmentConfig, SamplingConfig
from rft.environments.runtime import ENVIRONMENT_REWARD, EnvironmentCodeError, EnvironmentRuntime
from rft.grpo.sampler import eos_token_ids

PROBE_USER, PROBE_REPLY = "PROBE-USER-MESSAGE", "PROBE-ASSISTANT-REPLY"


@dataclass
class Episode:
    """One interaction after its prompt, as tokens and as messages."""

    group: int  # the prompt it answers
    token_ids: list[int] = field(default_factory=list)  # replies and environment messages, in order
    model_mask: list[int] = field(default_factory=list)  # 1 on the tokens the model wrote
    messages: list[dict] = field(default_factory=list)  # {"role": "assistant" | "user" | "tool", "content"}
    truncated: bool = False  # cut short by a limit
    problem: str | None = None  # the environment failed: the episode is scored as missing
    environment_reward: float = float("nan")  # the environment's reward(), when it has one
    finished: bool = False

    @property
    def replies(self) -> list[str]:
        return [message["content"] for message in self.messages if message["role"] == "assistant"]

    @property
    def turns(self) -> int:
        return len(self.replies)

    def summary(self) -> dict:
        """What reward functions receive as example["episode"], and the rollouts record."""
        return {"messages": self.messages, "replies": self.replies, "turns": self.turns,
                "truncated": self.truncated, "problem": self.problem}


class TurnRenderer:
    """The tokens between one reply's EOS and the next reply: the chat template's end of the assistant
    turn, the environment's message, and the start of the next assistant turn (with the pre-filled
    assistant prefix, when the prompt has one). Found by rendering a probe conversation with and
    without the message, so it works with any chat template that renders earlier turns unchanged."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.probe = [{"role": "user", "content": PROBE_USER}, {"role": "assistant", "content": PROBE_REPLY}]
        self.base = tokenizer.apply_chat_template(self.probe, tokenize=False)
        self.after_reply = self.base[self.base.rindex(PROBE_REPLY) + len(PROBE_REPLY):]

    def message_ids(self, messages: list[dict], reply_end_id: int, assistant_prefix: str = "") -> list[int]:
        """The tokens to append after a reply that ended with token `reply_end_id` (its EOS): the
        environment's messages (several tool results render together, as templates group them)."""
        rendered = self.tokenizer.apply_chat_template(self.probe + messages, tokenize=False, add_generation_prompt=True)
        if not rendered.startswith(self.base):
            raise ValueError("this model's chat template renders earlier turns differently once a message follows "
                             "(it may drop their reasoning), so an episode cannot grow turn by turn; use a model "
                             "whose template keeps earlier turns as they were")
        # The template's closing text starts with the turn-end token the model has already written.
        closing, written = self.after_reply, self.tokenizer.convert_ids_to_tokens(reply_end_id)
        if written and closing.startswith(written):
            closing = closing[len(written):]
        text = closing + rendered[len(self.base):] + assistant_prefix
        return self.tokenizer(text, add_special_tokens=False).input_ids


def assistant_prefix(messages: list[dict]) -> str:
    """The pre-filled start of each assistant turn: the prompt's final assistant message, which the
    model continues (rft.data.to_messages adds data.assistant_prefix as one)."""
    return messages[-1]["content"] if messages[-1]["role"] == "assistant" else ""


def first_user_message_with(messages: list[dict], addition: str | None) -> list[dict]:
    """The prompt's messages with reset()'s text added to the last user message (as TRL does)."""
    if not addition:
        return messages
    last_user = max(index for index, message in enumerate(messages) if message["role"] == "user")
    changed = dict(messages[last_user], content=f"{messages[last_user]['content']}\n\n{addition}")
    return messages[:last_user] + [changed] + messages[last_user + 1:]


@dataclass
class EpisodeBatch:
    prompt_messages: list[list[dict]]  # per prompt, with reset()'s text added
    prompt_texts: list[str]  # ... rendered
    episodes: list[Episode]  # group by group, G each
    generate_seconds: float
    environment_seconds: float


TOOL_CALL_PATTERN = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.DOTALL)  # Hermes / Qwen's format


def check_tool_format(tokenizer, runtime: EnvironmentRuntime) -> None:
    """An environment with tools needs a chat template that renders them; EnvironmentCodeError if not."""
    if runtime.tool_schemas and "tools" not in (tokenizer.chat_template or ""):
        raise EnvironmentCodeError(
            f"{runtime.info.class_name} has tools ({', '.join(runtime.info.tools)}), but this model's chat template "
            "has no tool format; use a model whose template takes tools, or describe the tool in the prompt and "
            "read its calls in step() as the arithmetic-tools environment does")


def parse_tool_calls(tokenizer, reply: str, context: str, schemas: list[dict]) -> list[tuple[str, dict]]:
    """The tool calls in a reply, as (name, arguments): read by the tokenizer's own response parser
    when it has one (transformers' parse_response), else in the <tool_call> {json} </tool_call>
    format of Hermes and Qwen templates. A call that is not valid JSON is no call."""
    if getattr(tokenizer, "response_template", None) is not None:
        parsed = tokenizer.parse_response(reply, prefix=context, tools=schemas)
        return [(call["function"]["name"], call["function"].get("arguments") or {})
                for call in parsed.get("tool_calls") or []]
    calls = []
    for match in TOOL_CALL_PATTERN.finditer(reply):
        try:
            call = json.loads(match.group(1))
        except json.JSONDecodeError:
            continue
        if isinstance(call, dict) and isinstance(call.get("name"), str):
            arguments = call.get("arguments")
            calls.append((call["name"], arguments if isinstance(arguments, dict) else {}))
    return calls


def environment_answer(runtime: EnvironmentRuntime, episode_id: int, reply: str,
                       calls: list[tuple[str, dict]]) -> tuple[list[dict] | None, str | None]:
    """The messages that answer a reply (None: the episode is over) and the environment's problem, if
    it failed: the results of the tools the reply called, else what step() says to it."""
    if calls:
        answers = []
        for name, arguments in calls:
            outcome = runtime.call_tool(episode_id, name, arguments)
            if outcome.problem:
                return None, outcome.problem
            answers.append({"role": "tool", "name": name, "content": outcome.value})
        return answers, None
    if not runtime.info.has_step:  # a tools-only environment: a reply without a call is the final answer
        return None, None
    outcome = runtime.step(episode_id, reply)
    if outcome.problem:
        return None, outcome.problem
    return (None if outcome.value is None else [outcome.value]), None


@torch.no_grad()
def play(model, tokenizer, prompt_messages: list[list[dict]], examples: list[dict], sampling: SamplingConfig,
         limits: EnvironmentConfig, runtime: EnvironmentRuntime, bf16: bool | None = None) -> EpisodeBatch:
    """G episodes for each prompt (its chat messages and its dataset row), played to their ends
    (bf16 as in rft.generation.generate).

    The G episodes of a prompt must start alike (GRPO compares them), so reset() must return the same
    text for each; an episode whose reset differs from its group's first fails. An environment's
    tools are rendered into the prompt by the chat template, and each reply's calls are answered
    with their results before the model goes on.
    """
    check_tool_format(tokenizer, runtime)
    group = sampling.num_generations
    eos_ids = eos_token_ids(model, tokenizer)
    renderer = TurnRenderer(tokenizer)
    prefixes = [assistant_prefix(messages) for messages in prompt_messages]
    environment_seconds = 0.0
    started = time.perf_counter()
    episodes, ids, opened = [], [], []
    for index, example in enumerate(examples):
        texts = []
        for _ in range(group):
            episode = Episode(index)
            episode_id, outcome = runtime.reset(example)
            episode.problem = outcome.problem
            if outcome.problem is None and texts and outcome.value != texts[0]:
                episode.problem = ("reset returned a different text than for the group's first episode; the G "
                                   "episodes of an example are compared with each other, so they must start alike "
                                   "(draw any randomness from the example)")
            texts.append(outcome.value)
            episodes.append(episode)
            ids.append(episode_id)
        opened.append(first_user_message_with(prompt_messages[index], texts[0]))
    environment_seconds += time.perf_counter() - started

    prompt_texts = [datasets.render_prompt(tokenizer, messages, runtime.tool_schemas or None) for messages in opened]
    prompt_ids = [tokenizer(text, add_special_tokens=False).input_ids for text in prompt_texts]
    # Each episode's computed keys and values are kept between turns (generation.SequenceCache): a
    # turn prefills only what is new since the last, the reply's end and the environment's message.
    caches: list[generation.SequenceCache | None] = [None] * len(episodes)
    pending = [list(prompt_ids[episode.group]) for episode in episodes]
    generate_seconds = 0.0
    device = next(model.parameters()).device
    for episode in episodes:
        episode.finished = episode.problem is not None
    for turn in range(1, limits.max_turns + 1):
        live = [i for i, episode in enumerate(episodes) if not episode.finished]
        if not live:
            break
        budgets = [min(sampling.max_completion_length, limits.max_episode_tokens - len(episodes[i].token_ids))
                   for i in live]
        started = time.perf_counter()
        replies, kept = generation.continue_sequences(
            model, [caches[i] for i in live], [pending[i] for i in live], max(budgets), eos_ids,
            tokenizer.pad_token_id, sampling.temperature, sampling.top_p, sampling.top_k, bf16=bf16)
        if device.type == "cuda":
            torch.cuda.synchronize()
        generate_seconds += time.perf_counter() - started
        started = time.perf_counter()
        for i, reply_ids, budget, cache in zip(live, replies, budgets, kept, strict=True):
            episode = episodes[i]
            reply_ids = reply_ids[:budget]
            ended = reply_ids[-1] in eos_ids
            reply = tokenizer.decode(reply_ids, skip_special_tokens=True)
            episode.token_ids += reply_ids
            episode.model_mask += [1] * len(reply_ids)
            episode.messages.append({"role": "assistant", "content": reply})
            if not ended:
                episode.truncated = episode.finished = True
                continue
            calls = parse_tool_calls(tokenizer, reply, prompt_texts[episode.group] + tokenizer.decode(
                episode.token_ids[:-len(reply_ids)]), runtime.tool_schemas) if runtime.tool_schemas else []
            answers, episode.problem = environment_answer(runtime, ids[i], reply, calls)
            if answers is None:
                episode.finished = True
                continue
            message_ids = renderer.message_ids(answers, reply_ids[-1], prefixes[episode.group])
            # The next reply needs room for at least one token.
            if turn == limits.max_turns or len(episode.token_ids) + len(message_ids) >= limits.max_episode_tokens:
                episode.truncated = episode.finished = True
                continue
            episode.token_ids += message_ids
            episode.model_mask += [0] * len(message_ids)
            episode.messages += answers
            caches[i], pending[i] = cache, [reply_ids[-1]] + message_ids
        environment_seconds += time.perf_counter() - started
        for i in live:  # a finished episode's keys and values are no longer needed
            if episodes[i].finished:
                caches[i] = None

    started = time.perf_counter()
    for episode, episode_id in zip(episodes, ids, strict=True):
        if runtime.has_reward and episode.problem is None:
            outcome = runtime.reward(episode_id)
            episode.problem = outcome.problem
            episode.environment_reward = outcome.value if outcome.problem is None else float("nan")
        runtime.close_episode(episode_id)
    environment_seconds += time.perf_counter() - started
    return EpisodeBatch(opened, prompt_texts, episodes, generate_seconds, environment_seconds)


@torch.no_grad()
def next_reply(model, tokenizer, prompt_messages: list[dict], example: dict, replies: list[str],
               sampling: SamplingConfig, runtime: EnvironmentRuntime) -> tuple[str, str] | None:
    """The model's next reply in one episode whose earlier replies are given, for play turn by turn
    (a person's game against a policy trained on episodes): a fresh environment instance replays
    them (reset, then step with each) to rebuild the conversation as training rendered it, and one
    reply is sampled after it. Returns (the conversation the model was given, as text; its reply),
    or None when the environment ended the episode on the given replies; EnvironmentCodeError when
    it fails. Replies are re-tokenised from their text, as a chat client would send them."""
    renderer = TurnRenderer(tokenizer)
    prefix = assistant_prefix(prompt_messages)
    reply_end_id = eos_token_ids(model, tokenizer)[0]
    episode_id, opening = runtime.reset(example)
    try:
        if opening.problem:
            raise EnvironmentCodeError(opening.problem)
        prompt_text = datasets.render_prompt(tokenizer, first_user_message_with(prompt_messages, opening.value))
        ids = tokenizer(prompt_text, add_special_tokens=False).input_ids
        for reply in replies:
            answers, problem = environment_answer(runtime, episode_id, reply, [])
            if problem:
                raise EnvironmentCodeError(problem)
            if answers is None:
                return None
            ids += tokenizer(reply, add_special_tokens=False).input_ids + [reply_end_id]
            ids += renderer.message_ids(answers, reply_end_id, prefix)
    finally:
        runtime.close_episode(episode_id)
    sampled, _ = generation.continue_sequences(
        model, [None], [ids], sampling.max_completion_length, eos_token_ids(model, tokenizer), tokenizer.pad_token_id,
        sampling.temperature, sampling.top_p, sampling.top_k)
    return tokenizer.decode(ids), tokenizer.decode(sampled[0], skip_special_tokens=True)


def with_episode_outcomes(per_function: dict[str, list[float]], episodes: list[Episode],
                          environment_has_reward: bool) -> dict[str, list[float]]:
    """The reward functions' scores of the episodes, with the environment's own reward as one more
    function ("environment"), and every score of an episode whose environment failed made missing:
    its problem, not the model, decided how it ended."""
    scores = dict(per_function)
    if environment_has_reward:
        scores[ENVIRONMENT_REWARD] = [episode.environment_reward for episode in episodes]
    return {name: [float("nan") if episode.problem else value for value, episode in zip(values, episodes, strict=True)]
            for name, values in scores.items()}


@dataclass
class EpisodeScores:
    per_function: dict[str, list[float]]  # every reward function's and the environment's, NaN where missing
    totals: list[float]  # weighted sums of the present scores; NaN where none is (a failed episode)
    row_errors: list[str]  # per episode: its environment's problem, or what a reward function raised


def score_episodes(rewards, prompt_texts: list[str], episodes: list[Episode], examples: list[dict],
                   environment_has_reward: bool, environment_weight: float) -> EpisodeScores:
    """Episodes scored as a run scores them: the reward functions see the last reply as `completion`
    and the episode as example["episode"]; the environment's reward() joins them as "environment"."""
    result = rewards.score(prompt_texts, [episode.replies[-1] if episode.replies else "" for episode in episodes],
                           [dict(example, episode=episode.summary()) for example, episode in zip(examples, episodes)],
                           [[t for t, mine in zip(e.token_ids, e.model_mask) if mine] for e in episodes])
    per_function = with_episode_outcomes(result.per_function, episodes, environment_has_reward)
    weights = {**rewards.weights, ENVIRONMENT_REWARD: environment_weight}
    totals = []
    for index in range(len(episodes)):
        present = {name: values[index] for name, values in per_function.items() if values[index] == values[index]}
        totals.append(sum(weights.get(name, 1.0) * value for name, value in present.items()) if present
                      else float("nan"))
    errors = [episode.problem or error for episode, error in zip(episodes, result.row_errors)]
    return EpisodeScores(per_function, totals, errors)
