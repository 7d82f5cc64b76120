"""An environment run from the dashboard: write the environment, play one episode, launch, and read
the episodes turn by turn in Rollouts."""

from __future__ import annotations

import json

import pytest
import tiny_model
from dashboard_driver import choose, configure_tiny_run, open_tab, screenshot, set_code, wait_for_text

TWO_TURNS = '''class TwoTurns:
    """Asks twice."""

    def reset(self, example):
        self.replies = []
        return "Answer twice."

    def step(self, reply):
        self.replies.append(reply)
        return "Once more, shorter." if len(self.replies) < 2 else None

    def reward(self):
        # No replies when the first one was cut by the token limit (step is not called for it).
        return -len(self.replies[-1]) / 20 if self.replies else -1.0
'''


@pytest.fixture(scope="module")
def stopping_model_dir(tmp_path_factory, bundled_model_dir):
    return tiny_model.build_tiny_model(tmp_path_factory.mktemp("stopping-model"), bundled_model_dir, stop_every=4)


def test_an_environment_run_from_the_train_tab(dashboard, page, stopping_model_dir, tmp_path):
    url, runs_dir = dashboard
    page.goto(url)
    page.locator("#launch").wait_for()
    # The page's load event checks the reward code: wait for it, or its message overwrites the recipe's.
    wait_for_text(page.locator("#check-message"), r"reward functions? found")
    # The wordle-game recipe brings its environment and turns episodes on.
    choose(page, "dataset-choice", "wordle-game")
    wait_for_text(page.locator("#check-message"), r"Loaded the wordle-game recipe: its reward functions, environment")
    assert "class WordleGame" in page.locator("#environment-code .cm-content").inner_text()
    assert page.locator("#rollout-mode input[value='Episodes in an environment']").is_checked()
    page.locator("#check-rewards").click()  # configure_tiny_run starts from a checked reward editor

    dataset = tmp_path / "topics.jsonl"
    dataset.write_text("".join(json.dumps({"prompt": f"Say something about topic {i}."}) + "\n" for i in range(4)))
    configure_tiny_run(page, stopping_model_dir, dataset, "env-run", max_steps=2)

    set_code(page, "class Broken:\n    def step(self, reply):\n        return None\n", "environment-code")
    page.locator("#check-environment").click()
    wait_for_text(page.locator("#environment-message"), r"no environment class found")
    set_code(page, TWO_TURNS, "environment-code")
    page.locator("#check-environment").click()
    wait_for_text(page.locator("#environment-message"), r"found environment TwoTurns .*its own reward")

    page.locator("#try-environment").click()
    wait_for_text(page.locator("#environment-message"), r"\d turn\(s\), \d+ model tokens", timeout_s=120)
    episode = page.locator("#environment-episode").inner_text()
    assert "Answer twice." in episode and "environment" in episode.lower()
    screenshot(page, "environment-1-played-episode")

    page.locator("#launch").click()
    wait_for_text(page.locator("#job-message"), r"Started run \S+env-run")
    wait_for_text(page.locator("#job-status"), r"(?i)finished", timeout_s=240)

    open_tab(page, "Rollouts")
    card = page.locator("#rollouts-best")
    wait_for_text(card, r"Best episode: total", timeout_s=60)
    text = card.inner_text()
    assert "MODEL" in text.upper()
    screenshot(page, "environment-2-rollouts")
