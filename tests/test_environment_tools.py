"""Environments with tools: their schemas for the chat template, calls parsed from a reply and
answered in the worker, and the tool results rendered as the template renders the conversation."""

from __future__ import annotations

import json

import pytest
import torch

from rft import data as datasets
from rft import models
from rft.config import EnvironmentConfig, SamplingConfig
from rft.environments import episodes
from rft.environments.runtime import EnvironmentCodeError, EnvironmentRuntime, analyse_environment
from rft.sft import conversation_tokens

CALCULATOR = '''
class Calculator:
    """Arithmetic with tools."""

    def reset(self, example):
        self.answer = example["answer"]
        self.calls = 0

    def multiply(self, a: int, b: int) -> int:
        """Multiply two integers.

        Args:
            a: the first factor
            b: the second factor
        """
        self.calls += 1
        return a * b

    def divide(self, a: int, b: int) -> float:
        """Divide a by b.

        Args:
            a: the dividend
            b: the divisor
        """
        return a / b

    def reward(self):
        return float(self.calls)
'''

# A Qwen-style chat template that takes tools: schemas in the system turn, results in user turns.
TOOL_TEMPLATE = (
    "{% if tools %}<|im_start|>system\nTools:{% for tool in tools %}\n{{ tool | tojson }}{% endfor %}<|im_end|>\n"
    "{% endif %}"
    "{% for message in messages %}"
    "{% if message.role == 'tool' %}"
    "{% if loop.first or messages[loop.index0 - 1].role != 'tool' %}<|im_start|>user{% endif %}"
    "\n<tool_response>\n{{ message.content }}\n</tool_response>"
    "{% if loop.last or messages[loop.index0 + 1].role != 'tool' %}<|im_end|>\n{% endif %}"
    "{% else %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def tool_tokenizer(tiny_model_dir):
    tokenizer = models.load_tokenizer(str(tiny_model_dir))
    tokenizer.chat_template = TOOL_TEMPLATE
    return tokenizer


def test_public_methods_are_tools_described_from_their_hints_and_docstrings():
    info = analyse_environment(CALCULATOR)
    assert info.tools == ("multiply", "divide") and not info.has_step and info.has_reward
    with EnvironmentRuntime(CALCULATOR) as runtime:
        names = [schema["function"]["name"] for schema in runtime.tool_schemas]
        assert names == ["multiply", "divide"]
        properties = runtime.tool_schemas[0]["function"]["parameters"]["properties"]
        assert properties["a"] == {"type": "integer", "description": "the first factor"}
    undocumented = "class Bad:\n    def reset(self, example):\n        pass\n    def look(self, word):\n        return word\n"
    with pytest.raises(EnvironmentCodeError, match="type hints and a docstring"):
        EnvironmentRuntime(undocumented)


def test_calls_are_answered_with_results_or_errors_the_model_can_read():
    with EnvironmentRuntime(CALCULATOR) as runtime:
        episode, _ = runtime.reset({"answer": 42})
        answers, problem = episodes.environment_answer(runtime, episode, "...", [("multiply", {"a": 6, "b": 7})])
        assert problem is None and answers == [{"role": "tool", "name": "multiply", "content": "42"}]
        answers, _ = episodes.environment_answer(runtime, episode, "...", [("divide", {"a": 1, "b": 0}),
                                                                           ("sqrt", {"x": 2})])
        assert answers[0]["content"].startswith("error: ZeroDivisionError")
        assert answers[1]["content"] == "error: there is no tool 'sqrt'; the tools are multiply, divide"
        # No call and no step(): the reply is the final answer.
        assert episodes.environment_answer(runtime, episode, "The answer is 42.", []) == (None, None)
        assert runtime.reward(episode).value == 1.0  # the failed calls ran no tool; only multiply counted


def test_tool_calls_are_read_from_the_hermes_format():
    reply = ('Let me compute. <tool_call>\n{"name": "multiply", "arguments": {"a": 6, "b": 7}}\n</tool_call>'
             '<tool_call>{"name": "divide", "arguments": {"a": 1, "b": 2}}</tool_call> <tool_call>{broken</tool_call>')

    class NoParser:
        response_template = None

    assert episodes.parse_tool_calls(NoParser(), reply, "", []) == [("multiply", {"a": 6, "b": 7}),
                                                                     ("divide", {"a": 1, "b": 2})]
    assert episodes.parse_tool_calls(NoParser(), "no call here", "", []) == []


def test_tool_results_render_as_the_template_renders_the_whole_conversation(tool_tokenizer):
    with EnvironmentRuntime(CALCULATOR) as runtime:
        schemas = runtime.tool_schemas
    prompt_messages = [{"role": "user", "content": "What is 6 * 7 / 2?"}]
    conversation = [
        {"role": "assistant", "content": '<tool_call>{"name": "multiply", "arguments": {"a": 6, "b": 7}}</tool_call>'},
        {"role": "tool", "name": "multiply", "content": "42"},
        {"role": "tool", "name": "divide", "content": "21.0"},
        {"role": "assistant", "content": "It is 21."},
    ]
    prompt = datasets.render_prompt(tool_tokenizer, prompt_messages, schemas)
    assert json.dumps(schemas[0]) in prompt  # the template rendered the tools
    ids, mask = conversation_tokens(episodes.TurnRenderer(tool_tokenizer), conversation, "")
    whole = tool_tokenizer.apply_chat_template(prompt_messages + conversation, tools=schemas, tokenize=False)
    assert prompt + tool_tokenizer.decode(ids) + "\n" == whole
    assert tool_tokenizer.decode([t for t, m in zip(ids, mask) if not m]).count("<tool_response>") == 2


def test_a_template_without_a_tool_format_is_refused_for_an_environment_with_tools(tiny_model_dir):
    tokenizer = models.load_tokenizer(str(tiny_model_dir))  # SmolLM2's template renders no tools
    model = models.load_base_model(models.ModelConfig(name_or_path=str(tiny_model_dir), device="cpu"))
    with EnvironmentRuntime(CALCULATOR) as runtime, pytest.raises(EnvironmentCodeError, match="no tool format"):
        episodes.play(model, tokenizer, [[{"role": "user", "content": "hi"}]], [{"answer": 1}],
                      SamplingConfig(num_generations=2, max_completion_length=4), EnvironmentConfig(source=CALCULATOR),
                      runtime)


def test_episodes_play_with_tools_in_the_prompt(tiny_model_dir, tool_tokenizer):
    model = models.load_base_model(models.ModelConfig(name_or_path=str(tiny_model_dir), device="cpu"))
    torch.manual_seed(0)
    with EnvironmentRuntime(CALCULATOR) as runtime:
        batch = episodes.play(model, tool_tokenizer, [[{"role": "user", "content": "What is 6 * 7?"}]],
                              [{"answer": 42}], SamplingConfig(num_generations=2, max_completion_length=8),
                              EnvironmentConfig(source=CALCULATOR, max_turns=2), runtime)
    assert '"name": "multiply"' in batch.prompt_texts[0]
    # The random model calls no tool, and the environment has no step(): one reply ends each episode.
    assert all(e.turns == 1 and e.problem is None and e.environment_reward == 0.0 for e in batch.episodes)
