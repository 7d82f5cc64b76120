"""A live reward edit in a real Chromium: a running tiny-model job gets new reward code from the
Train tab, a broken edit is refused there while the job goes on, and Monitor marks the step where
the new code took effect. Screenshots land in tests/artifacts/screenshots/."""

from __future__ import annotations

import pytest
from dashboard_driver import (
    configure_tiny_run,
    monitor_step,
    open_tab,
    screenshot,
    set_code,
    wait_for_text,
    wait_until,
    write_word_prompts,
)

pytestmark = pytest.mark.browser

LONG_RUN = 400  # steps: the job is still running when the test has seen what it needs
LONGER_IS_BETTER = (
    "def longer(prompt, completion, example):\n"
    '    """Longer completions score higher."""\n'
    "    return len(completion) / 100\n"
)
BROKEN = "def longer(prompt, completion, example)\n    return 1.0\n"


def test_apply_a_reward_edit_to_the_running_job(dashboard, page, tiny_model_dir, tmp_path):
    url, _ = dashboard
    page.goto(url)
    page.locator("#launch").wait_for()
    configure_tiny_run(page, tiny_model_dir, write_word_prompts(tmp_path / "words.jsonl"), "live-edit", LONG_RUN)

    page.locator("#apply-rewards").click()  # nothing runs yet
    wait_for_text(page.locator("#check-message"), r"No running job to apply it to")

    page.locator("#launch").click()
    wait_for_text(page.locator("#job-message"), r"Started run")
    wait_for_text(page.locator("#job-status"), r"step [1-9]\d* of", timeout_s=120)

    # A broken edit: refused before it is sent, and the job keeps its code.
    set_code(page, BROKEN)
    page.locator("#apply-rewards").click()
    wait_for_text(page.locator("#check-message"), r"Not applied[\s\S]*syntax error")

    set_code(page, LONGER_IS_BETTER)
    page.locator("#apply-rewards").click()
    wait_for_text(page.locator("#check-message"), r"Sent to \S+live-edit")
    wait_for_text(page.locator("#reward-weights"), r"longer")  # the functions of the code sent
    status = wait_for_text(page.locator("#job-status"), r"reward code v2 since step \d+", timeout_s=90)
    screenshot(page, "9-reward-edit-train")
    changed_at = int(status.split("reward code v2 since step ")[1].split()[0])

    open_tab(page, "Monitor")
    wait_until(lambda: str(monitor_step(page) or 0), r"\d+", timeout_s=60)
    wait_until(lambda: str(monitor_step(page) or 0) if (monitor_step(page) or 0) > changed_at else "", r"\d+",
               timeout_s=90)
    wait_for_text(page.locator("#chart-reward"), r"rewards v2", timeout_s=60)
    for chart in ("kl", "loss", "length"):
        assert "rewards v2" in page.locator(f"#chart-{chart}").inner_text()
    screenshot(page, "9-reward-edit-monitor")

    open_tab(page, "Train")
    page.locator("#stop").click()
    wait_for_text(page.locator("#job-status"), r"(?i)stopped", timeout_s=120)
