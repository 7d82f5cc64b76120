"""Reward code that reads `example` keys the dataset lacks is reported by Check, Try and the launch
check, instead of a run whose every reward is missing (the Wordle code kept after an upload)."""

import json

from rft import jobs
from rft.config import DataConfig, ModelConfig, RewardsConfig, RunConfig
from rft.rewards import missing_example_keys
from rft.train_form import missing_key_warnings, try_rewards
from rft.tasks.wordle import reward_source as wordle_reward_source

READS_SECRET = (
    "def needs_secret(prompt, completion, example):\n"
    "    return float(example['secret'] in completion)\n\n"
    "def optional_hint(prompt, completion, example):\n"
    "    return float(example.get('hint', '') in completion)\n"
)


def test_only_keys_read_by_subscript_and_absent_are_reported():
    [message] = missing_example_keys(READS_SECRET, {"answer"})
    assert message.startswith("needs_secret reads example['secret'], which this dataset does not have")
    assert "its columns: answer" in message
    assert missing_example_keys(READS_SECRET, {"secret"}) == []
    assert missing_example_keys("def broken(:\n", {"x"}) == []  # a syntax error is Check's to report


def test_the_wordle_code_on_an_uploaded_dataset_is_reported_by_try_and_the_launch_check(tmp_path):
    path = tmp_path / "words.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"Say {w}.", "answer": w}) + "\n" for w in ("apple", "river")))
    data = DataConfig(preset=None, path=str(path))
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    source = wordle_reward_source()
    assert missing_key_warnings(source, rows, data)

    _, message, kind = try_rewards(source, {}, rows, data, "<guess>[crane]</guess>", 10.0)
    assert kind == "warn" and "which this dataset does not have" in message

    config = RunConfig(model=ModelConfig(), data=data, rewards=RewardsConfig(source=source))
    assert any("which this dataset does not have" in problem for problem in jobs.preflight(config))
    fitting = RunConfig(model=ModelConfig(), data=data, rewards=RewardsConfig(
        source="def says_answer(prompt, completion, example):\n    return float(example['answer'] in completion)\n"))
    assert not any("does not have" in problem for problem in jobs.preflight(fitting))
