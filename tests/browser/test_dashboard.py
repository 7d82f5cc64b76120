"""The dashboard in a real Chromium: configure and launch a run on the tiny model, watch Monitor and
Rollouts fill in, stop it, resume it to the end, and see bad reward code reported.

Screenshots of every tab land in tests/artifacts/screenshots/ for review.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dashboard_driver import (
    choose,
    open_all_settings,
    open_tab,
    screenshot,
    set_code,
    set_number,
    wait_for_text,
    wait_until,
    write_word_prompts,
)

pytestmark = pytest.mark.browser

MAX_STEPS = 30
# A fifth of a second per completion: on any machine the run is still going when the test stops it.
REWARD_CODE = (
    "import time\n\n\n"
    "def brevity(prompt, completion, example):\n"
    '    """Shorter completions score higher."""\n'
    "    time.sleep(0.2)\n"
    "    return -len(completion) / 100\n"
)
BROKEN_CODE = "def brevity(prompt, completion, example)\n    return 1.0\n"


def run_status(runs_dir: Path) -> dict:
    [run_dir] = [p for p in runs_dir.iterdir() if (p / "status.json").exists()]
    return json.loads((run_dir / "status.json").read_text())


def test_configure_launch_watch_stop_resume(dashboard, page, tiny_model_dir, tmp_path):
    url, runs_dir = dashboard
    page.goto(url)
    page.locator("#launch").wait_for()
    wait_for_text(page.locator("#check-message"), r"reward functions? found")
    screenshot(page, "1-train")

    # A built-in dataset brings its recipe while the reward code is a recipe's own, unedited ...
    choose(page, "dataset-choice", "arithmetic")
    wait_for_text(page.locator("#check-message"), r"Loaded the arithmetic recipe")
    assert "def correct_answer" in page.locator("#reward-code .cm-content").inner_text()
    assert page.locator("#run-name textarea, #run-name input").first.input_value() == "arithmetic"
    choose(page, "dataset-choice", "wordle")
    wait_for_text(page.locator("#check-message"), r"Loaded the wordle recipe")
    # The editor renders only the lines in view: the top of the Wordle code.
    assert "Reward functions for Wordle" in page.locator("#reward-code .cm-content").inner_text()

    # Bad reward code: the syntax error and its line reach the UI.
    set_code(page, BROKEN_CODE)
    page.locator("#check-rewards").click()
    wait_for_text(page.locator("#check-message"), r"line 1: syntax error")

    set_code(page, REWARD_CODE)
    page.locator("#check-rewards").click()
    wait_for_text(page.locator("#check-message"), r"1 reward function found:[\s\S]*brevity \(per-sample")

    # ... and edited code stays until the user asks for the recipe.
    choose(page, "dataset-choice", "arithmetic")
    wait_for_text(page.locator("#check-message"), r"Your edited reward code was kept")
    assert "def brevity" in page.locator("#reward-code .cm-content").inner_text()
    assert page.locator("#load-recipe").is_visible()

    dataset = write_word_prompts(tmp_path / "words.jsonl")
    with page.expect_file_chooser() as chooser:
        page.locator("#dataset-upload").click()
    chooser.value.set_files(str(dataset))
    wait_for_text(page.locator("#dataset-message"), r"words\.jsonl: 6 rows")
    assert not page.locator("#load-recipe").is_visible()  # an uploaded file has no recipe
    assert "Say a word like apple." in page.locator("#dataset-preview").inner_text()

    # Reward code written for another dataset: Check says which key this one lacks.
    set_code(page, "def needs_secret(prompt, completion, example):\n    return float(example['secret'] in completion)\n")
    page.locator("#check-rewards").click()
    wait_for_text(page.locator("#check-message"), r"reads example\['secret'\], which this dataset does not have")
    set_code(page, REWARD_CODE)

    page.locator("#pasted-completion textarea").fill("hello there")
    page.locator("#try-rewards").click()
    wait_for_text(page.locator("#try-result"), r"-0\.11")

    page.locator("#model-path textarea, #model-path input").first.fill(str(tiny_model_dir))
    page.locator("#run-name textarea, #run-name input").first.fill("browser-test")
    # An invalid configuration is refused with the field named, and nothing starts.
    set_number(page, "hp-sampling-num-generations", 1)
    page.locator("#launch").click()
    wait_for_text(page.locator("#job-message"), r"configuration is invalid[\s\S]*sampling\.num_generations")
    assert not any((p / "config.yaml").exists() for p in runs_dir.iterdir())

    set_number(page, "hp-optim-prompts-per-step", 1)
    set_number(page, "hp-sampling-num-generations", 4)
    set_number(page, "hp-sampling-max-completion-length", 16)
    # Quick try: a 3-step run, announced with the time an earlier run's speed predicts (none yet here).
    page.locator("#quick-try").click()
    wait_for_text(page.locator("#batch-summary"), r"3 steps[\s\S]*Estimated time")
    set_number(page, "hp-schedule-max-steps", MAX_STEPS)
    open_all_settings(page)
    set_number(page, "hp-schedule-save-every", 2)
    wait_for_text(page.locator("#batch-summary"), r"4 completions per step")

    page.get_by_role("button", name="Config as YAML").click()
    wait_for_text(page.locator("#job-message"), r"Saved browser-test\.yaml")
    assert "python -m rft train --config browser-test.yaml" in page.locator("#cli-command").inner_text()

    page.locator("#launch").click()
    wait_for_text(page.locator("#job-message"), r"Started run \S+browser-test")
    wait_for_text(page.locator("#job-status"), r"(?i)queued|running")
    # A launch while a job runs is refused with a clear message.
    page.locator("#launch").click()
    wait_for_text(page.locator("#job-message"), r"already (queued|running)")

    # A reload re-attaches to the running job.
    page.reload()
    wait_for_text(page.locator("#job-status"), r"browser-test")

    open_tab(page, "Monitor")
    wait_for_text(page.locator("#monitor-progress"), rf"step ([2-9]|[12]\d) of {MAX_STEPS}", timeout_s=90)
    page.locator("#chart-reward .scatterlayer .trace").first.wait_for()
    # The log box shows its latest lines, not its first.
    log_box = page.locator("#monitor-logs textarea")
    wait_until(lambda: str(log_box.evaluate("box => box.scrollHeight - box.clientHeight - box.scrollTop <= 4 "
                                            "&& box.scrollHeight > box.clientHeight")), "True")
    page.locator("#chart-groups .boxlayer .trace").first.wait_for()
    wait_until(page.locator("#monitor-logs textarea").input_value, r"dataset: 6 prompts")
    screenshot(page, "2-monitor")

    open_tab(page, "Train")
    page.locator("#stop").click()
    wait_for_text(page.locator("#job-message"), r"Stopping")
    wait_for_text(page.locator("#job-status"), r"(?i)stopped", timeout_s=60)
    stopped_at = run_status(runs_dir)["step"]
    assert 2 <= stopped_at < MAX_STEPS

    open_tab(page, "Rollouts")
    wait_for_text(page.locator("#rollouts-table"), r"-\d+\.\d{3}")  # brevity totals, to 3 decimals
    wait_for_text(page.locator("#rollouts-best"), r"Best completion: total")
    assert "Say a word like" in page.locator("#rollouts-groups").inner_text()
    screenshot(page, "3-rollouts")

    open_tab(page, "Train")

    page.locator("#resume").click()
    wait_for_text(page.locator("#job-message"), r"Resuming")
    wait_for_text(page.locator("#job-status"), r"(?i)finished", timeout_s=180)
    assert run_status(runs_dir)["step"] == MAX_STEPS

    # A finished run trains on when Max steps is raised above the steps it planned.
    set_number(page, "hp-schedule-max-steps", MAX_STEPS)
    page.locator("#resume").click()
    wait_for_text(page.locator("#job-message"), rf"has finished its {MAX_STEPS} steps; to train it further")
    set_number(page, "hp-schedule-max-steps", MAX_STEPS + 2)
    page.locator("#resume").click()
    wait_for_text(page.locator("#job-message"), rf"now to step {MAX_STEPS + 2} \(it planned {MAX_STEPS}\)")
    screenshot(page, "3b-train-on")
    # The job bar said "finished" already, before the click: wait for the run itself, then the bar.
    wait_until(lambda: "{state} at step {step}".format(**run_status(runs_dir)), rf"^finished at step {MAX_STEPS + 2}$",
               timeout_s=180)
    wait_for_text(page.locator("#job-status"), r"(?i)finished")

    open_tab(page, "Monitor")
    wait_for_text(page.locator("#monitor-progress"), rf"step {MAX_STEPS + 2} of {MAX_STEPS + 2}")

    open_tab(page, "Runs")
    wait_for_text(page.locator("#runs-table"), r"browser-test[\s\S]*finished")
    page.locator("#chart-overlay .scatterlayer .trace").first.wait_for()
    screenshot(page, "4-runs")

    page.get_by_role("button", name="Open in Rollouts").click()
    wait_for_text(page.locator("#rollouts-summary"), rf"Step {MAX_STEPS + 2}")

    open_tab(page, "Runs")
    page.locator("#runs-delete").click()
    wait_for_text(page.locator(".confirm"), r"cannot be undone")
    page.locator("#runs-confirm-delete").click()
    wait_for_text(page.locator("#runs-message"), r"Deleted \S+browser-test")
    assert not any((p / "config.yaml").exists() for p in runs_dir.iterdir())


def test_a_dataset_whose_prompt_column_has_another_name(dashboard, page, tmp_path):
    """A file whose prompts are in `question`: refused with its columns named, then mapped in the form,
    with the columns that reach the reward functions said."""
    url, _ = dashboard
    dataset = tmp_path / "questions.jsonl"
    dataset.write_text("".join(json.dumps({"question": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n"
                               for i in range(5)))
    page.goto(url)
    wait_for_text(page.locator("#check-message"), r"reward functions? found")
    with page.expect_file_chooser() as chooser:
        page.locator("#dataset-upload").click()
    chooser.value.set_files(str(dataset))
    wait_for_text(page.locator("#dataset-message"), r"row 1 has no 'prompt' column \(columns: answer, question\)")
    column = page.locator("#prompt-column input, #prompt-column textarea").first
    column.fill("question")
    column.press("Enter")
    wait_for_text(page.locator("#dataset-message"),
                  r"questions\.jsonl: 5 rows[\s\S]*The prompt is 'question'; reward functions receive answer as example")
    assert "What is 0 + 0?" in page.locator("#dataset-preview").inner_text()
    screenshot(page, "13-prompt-column")
