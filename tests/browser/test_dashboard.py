"""The dashboard in a real Chromium: configure and launch a run on the tiny model, watch Monitor and
Rollouts fill in, stop it, resume it to the end, and see bad reward code reported.

Screenshots of every tab land in tests/artifacts/screenshots/ for review.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = PROJECT_ROOT / "tests" / "artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
MAX_STEPS = 12
REWARD_CODE = (
    "def brevity(prompt, completion, example):\n"
    '    """Shorter completions score higher."""\n'
    "    return -len(completion) / 100\n"
)
BROKEN_CODE = "def brevity(prompt, completion, example)\n    return 1.0\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, process: subprocess.Popen, timeout_s: float = 90) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the dashboard exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"the dashboard did not answer at {url} within {timeout_s} s")


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory):
    """`python app.py` on a free port with an empty runs directory; yields (url, runs_dir)."""
    runs_dir = tmp_path_factory.mktemp("runs")
    port = free_port()
    log = open(runs_dir.parent / "dashboard.log", "w")
    env = dict(os.environ, RFT_RUNS_DIR=str(runs_dir), GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1")
    process = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--runs-dir", str(runs_dir)],
                               cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for_http(url, process)
        yield url, runs_dir
    finally:
        from rft.jobs import active_jobs, kill_job

        for run in active_jobs(runs_dir):
            kill_job(run.run_dir)
        process.terminate()
        process.wait(timeout=20)
        log.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (make test installs it)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    context.close()


def screenshot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def set_code(page, source: str) -> None:
    editor = page.locator("#reward-code .cm-content")
    editor.click()
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    page.keyboard.insert_text(source)


def set_number(page, element_id: str, value) -> None:
    box = page.locator(f"#{element_id} input")
    box.fill(str(value))
    box.press("Tab")


def open_tab(page, label: str) -> None:
    page.get_by_role("tab", name=label, exact=True).click()


def wait_for_text(locator, pattern: str, timeout_s: float = 60) -> str:
    """Polls a locator's text until it matches `pattern` (the UI refreshes on timers)."""
    return wait_until(lambda: locator.inner_text() if locator.count() else "", pattern, timeout_s)


def wait_until(read_text, pattern: str, timeout_s: float = 60) -> str:
    deadline = time.time() + timeout_s
    text = ""
    while time.time() < deadline:
        text = read_text()
        if re.search(pattern, text):
            return text
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for /{pattern}/; last text: {text!r}")


def run_status(runs_dir: Path) -> dict:
    [run_dir] = [p for p in runs_dir.iterdir() if (p / "status.json").exists()]
    return json.loads((run_dir / "status.json").read_text())


def test_configure_launch_watch_stop_resume(dashboard, page, tiny_model_dir, tmp_path):
    url, runs_dir = dashboard
    page.goto(url)
    page.locator("#launch").wait_for()
    wait_for_text(page.locator("#check-message"), r"reward functions? found")
    screenshot(page, "1-train")

    # Bad reward code: the syntax error and its line reach the UI.
    set_code(page, BROKEN_CODE)
    page.locator("#check-rewards").click()
    wait_for_text(page.locator("#check-message"), r"line 1: syntax error")

    set_code(page, REWARD_CODE)
    page.locator("#check-rewards").click()
    wait_for_text(page.locator("#check-message"), r"1 reward function found:[\s\S]*brevity \(per-sample")

    dataset = tmp_path / "words.jsonl"
    dataset.write_text("".join(json.dumps({"prompt": f"Say a word like {w}.", "answer": w}) + "\n"
                               for w in ("apple", "river", "stone", "cloud", "green", "light")))
    with page.expect_file_chooser() as chooser:
        page.locator("#dataset-upload").click()
    chooser.value.set_files(str(dataset))
    wait_for_text(page.locator("#dataset-message"), r"words\.jsonl: 6 rows")
    assert "Say a word like apple." in page.locator("#dataset-preview").inner_text()

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

    set_number(page, "hp-sampling-num-generations", 4)
    set_number(page, "hp-sampling-max-completion-length", 16)
    set_number(page, "hp-schedule-max-steps", MAX_STEPS)
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
    wait_for_text(page.locator("#monitor-progress"), r"step ([2-9]|1\d) of 12", timeout_s=90)
    page.locator("#chart-reward .scatterlayer .trace").first.wait_for()
    page.locator("#chart-groups .boxlayer .trace").first.wait_for()
    wait_until(page.locator("#monitor-logs textarea").input_value, r"dataset: 6 prompts")
    screenshot(page, "2-monitor")

    open_tab(page, "Rollouts")
    wait_for_text(page.locator("#rollouts-table"), r"-0\.\d{3}")
    wait_for_text(page.locator("#rollouts-best"), r"Best completion: total")
    assert "Say a word like" in page.locator("#rollouts-groups").inner_text()
    screenshot(page, "3-rollouts")

    open_tab(page, "Train")
    page.locator("#stop").click()
    wait_for_text(page.locator("#job-message"), r"Stopping")
    wait_for_text(page.locator("#job-status"), r"(?i)stopped", timeout_s=60)
    stopped_at = run_status(runs_dir)["step"]
    assert 2 <= stopped_at < MAX_STEPS

    page.locator("#resume").click()
    wait_for_text(page.locator("#job-message"), r"Resuming")
    wait_for_text(page.locator("#job-status"), r"(?i)finished", timeout_s=120)
    assert run_status(runs_dir)["step"] == MAX_STEPS

    open_tab(page, "Monitor")
    wait_for_text(page.locator("#monitor-progress"), r"step 12 of 12")

    open_tab(page, "Runs")
    wait_for_text(page.locator("#runs-table"), r"browser-test[\s\S]*finished")
    page.locator("#chart-overlay .scatterlayer .trace").first.wait_for()
    screenshot(page, "4-runs")

    page.get_by_role("button", name="Open in Rollouts").click()
    wait_for_text(page.locator("#rollouts-summary"), r"Step 12")

    open_tab(page, "Runs")
    page.locator("#runs-delete").click()
    wait_for_text(page.locator(".confirm"), r"cannot be undone")
    page.locator("#runs-confirm-delete").click()
    wait_for_text(page.locator("#runs-message"), r"Deleted \S+browser-test")
    assert not any((p / "config.yaml").exists() for p in runs_dir.iterdir())
