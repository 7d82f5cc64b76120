"""Faults a dashboard user meets, in a real Chromium: two pages launching at the same moment, the
dashboard process killed in the middle of a run, and a run directory deleted while it is shown.

Each test starts its own dashboard over its own runs directory and trains the tiny model.
"""

from __future__ import annotations

import re
import shutil

import pytest
from dashboard_driver import (
    VIEWPORT,
    choose,
    configure_tiny_run,
    monitor_step,
    open_tab,
    running_dashboard,
    screenshot,
    wait_for_text,
    write_word_prompts,
)
from waiting import wait_for

from rft.runs import effective_state, list_runs, pid_alive, read_status

pytestmark = pytest.mark.browser

LONG_RUN = 1000  # steps: longer than any test, which stops or kills the run itself


def plotted_data(page, name: str) -> str | None:
    """What the Monitor's `name` chart plots, as JSON: opaque (Plotly keeps arrays base64-encoded),
    but it changes whenever the plotted data do."""
    return page.evaluate("""(name) => {
        const plot = document.querySelector(`#chart-${name} .js-plotly-plot`);
        return plot && plot.data ? JSON.stringify(plot.data.map(trace => [trace.x, trace.y])) : null;
    }""", name)


def error_toasts(page) -> int:
    """Error pop-ups: what Gradio shows when a callback raised."""
    return page.locator(".toast-body.error").count()


def test_two_pages_launching_at_once_start_one_run_and_the_other_says_why(browser, runs_dir, tiny_model_dir,
                                                                          tmp_path):
    dataset = write_word_prompts(tmp_path / "words.jsonl")
    with running_dashboard(runs_dir, tmp_path / "dashboard.log") as (url, _):
        context = browser.new_context(viewport=VIEWPORT)
        pages = [context.new_page() for _ in range(2)]
        for number, page in enumerate(pages, start=1):
            page.set_default_timeout(30_000)
            page.goto(url)
            configure_tiny_run(page, tiny_model_dir, dataset, f"race-{number}", LONG_RUN)
        for page in pages:
            page.locator("#launch").click()
        messages = [wait_for_text(page.locator("#job-message"), r"Started run|Cannot launch") for page in pages]

        started = [text for text in messages if "Started run" in text]
        refused = [text for text in messages if "Cannot launch" in text]
        assert len(started) == 1 and len(refused) == 1, messages
        run_id = re.search(r"Started run (\S+)\. Watch", started[0]).group(1)
        assert re.search(rf"run {re.escape(run_id)} is already (queued|running) .*One training job runs at a time",
                         refused[0]), refused[0]
        assert [run.run_id for run in list_runs(runs_dir)] == [run_id]
        # The refused page now follows the job that was in its way, so its Stop button acts on it.
        refused_page = pages[messages.index(refused[0])]
        wait_for_text(refused_page.locator("#job-status"), rf"(?i)(queued|running) {re.escape(run_id)}")
        screenshot(refused_page, "10-launch-refused")
        context.close()


def test_a_restarted_dashboard_reattaches_to_the_running_run_and_stops_it(page, runs_dir, tiny_model_dir, tmp_path):
    dataset = write_word_prompts(tmp_path / "words.jsonl")
    with running_dashboard(runs_dir, tmp_path / "first-dashboard.log") as (url, first_dashboard):
        page.goto(url)
        configure_tiny_run(page, tiny_model_dir, dataset, "restart", LONG_RUN)
        page.locator("#launch").click()
        wait_for_text(page.locator("#job-message"), r"Started run \S+restart")
        wait_for_text(page.locator("#job-status"), r"(?i)running \S+restart", timeout_s=90)
        first_dashboard.kill()  # SIGKILL: the dashboard gets no chance to clean up
        first_dashboard.wait()
    [run] = list_runs(runs_dir)
    trainer_pid = read_status(run.run_dir)["pid"]
    assert pid_alive(trainer_pid) and effective_state(read_status(run.run_dir)) == "running"

    with running_dashboard(runs_dir, tmp_path / "second-dashboard.log") as (url, _):
        page.goto(url)
        open_tab(page, "Monitor")
        running = rf"(?i)running {re.escape(run.run_id)} · step \d+ of {LONG_RUN}"
        wait_for_text(page.locator("#monitor-progress"), running)
        first_step = wait_for(lambda: monitor_step(page), 60, "the Monitor to show a step")
        first_plot = wait_for(lambda: plotted_data(page, "reward"), 60, "the reward chart to draw")
        wait_for(lambda: monitor_step(page) > first_step, 60, "the Monitor's step to advance")
        wait_for(lambda: plotted_data(page, "reward") != first_plot, 60, "the reward chart to take in new steps")
        screenshot(page, "11-monitor-after-restart")

        open_tab(page, "Train")
        wait_for_text(page.locator("#job-status"), rf"(?i)running {re.escape(run.run_id)}")
        page.locator("#stop").click()
        wait_for_text(page.locator("#job-message"), r"Stopping")
        wait_for_text(page.locator("#job-status"), rf"(?i)stopped {re.escape(run.run_id)}", timeout_s=90)
    assert read_status(run.run_dir)["state"] == "stopped"
    wait_for(lambda: not pid_alive(trainer_pid), 30, "the trainer process to exit")


def test_a_run_deleted_while_shown_is_reported_and_the_dashboard_keeps_working(page, runs_dir, tiny_run_dir, tmp_path):
    kept, deleted = "20250101-000000-kept", "20250102-000000-deleted"
    for run_id in (kept, deleted):
        shutil.copytree(tiny_run_dir, runs_dir / run_id)
    with running_dashboard(runs_dir, tmp_path / "dashboard.log") as (url, _):
        page.goto(url)
        open_tab(page, "Monitor")
        choose(page, "monitor-run", deleted)
        wait_for_text(page.locator("#monitor-progress"), rf"(?i)finished {deleted} · step 3 of 3")
        open_tab(page, "Rollouts")
        choose(page, "rollouts-run", deleted)
        wait_for_text(page.locator("#rollouts-summary"), r"Step 3")
        open_tab(page, "Runs")
        choose(page, "runs-selected", deleted)

        shutil.rmtree(runs_dir / deleted)
        gone = rf"Run {deleted} no longer exists: its directory was deleted"
        open_tab(page, "Monitor")
        wait_for_text(page.locator("#monitor-progress"), gone)
        assert page.locator("#monitor-run input").input_value() == f"{deleted} (deleted)"
        assert page.locator("#monitor-logs textarea").input_value() == ""
        open_tab(page, "Rollouts")
        wait_for_text(page.locator("#rollouts-summary"), gone)
        assert page.locator("#rollouts-best").inner_text() == ""
        open_tab(page, "Runs")
        wait_for_text(page.locator("#runs-message"), gone)
        wait_for(lambda: deleted not in page.locator("#runs-table").inner_text(), 30, "the table to drop the run")
        screenshot(page, "12-run-deleted")
        assert error_toasts(page) == 0 and "Traceback" not in page.locator("body").inner_text()

        # The dashboard goes on: the remaining run opens in Monitor and Rollouts.
        page.get_by_role("button", name="Open in Monitor").click()
        wait_for_text(page.locator("#monitor-progress"), rf"(?i)finished {kept} · step 3 of 3")
        open_tab(page, "Rollouts")
        choose(page, "rollouts-run", kept)
        wait_for_text(page.locator("#rollouts-summary"), r"Step 3")
        assert error_toasts(page) == 0
