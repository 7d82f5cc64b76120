"""Running the dashboard as a subprocess and driving it in Chromium: what the browser tests and the
soak (tests/soak.py) share.

Chromium is Debian's (/usr/bin/chromium), driven through the Python `playwright` package.
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
from contextlib import contextmanager
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = PROJECT_ROOT / "tests" / "artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1280, "height": 800}
REWARD_CODE = (
    "def brevity(prompt, completion, example):\n"
    '    """Shorter completions score higher."""\n'
    "    return -len(completion) / 100\n"
)
WORDS = ("apple", "river", "stone", "cloud", "green", "light")


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


@contextmanager
def running_dashboard(runs_dir: Path, log_path: Path):
    """`python app.py` on a free port over `runs_dir`, its output in `log_path`; yields (url, process).

    Training jobs it started are left alone on exit: they outlive the dashboard by design."""
    port = free_port()
    env = dict(os.environ, RFT_RUNS_DIR=str(runs_dir), GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1")
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--runs-dir", str(runs_dir)],
                                   cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}/"
        try:
            wait_for_http(url, process)
            yield url, process
        finally:
            process.terminate()
            process.wait(timeout=20)


def kill_jobs_left_running(runs_dir: Path) -> None:
    from rft.jobs import active_jobs, kill_job

    for run in active_jobs(runs_dir):
        kill_job(run.run_dir)


def launch_chromium(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


def write_word_prompts(path: Path) -> Path:
    """A six-row dataset whose prompts ask for a word: enough for the tiny model to train on."""
    path.write_text("".join(json.dumps({"prompt": f"Say a word like {word}.", "answer": word}) + "\n"
                            for word in WORDS))
    return path


def screenshot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def set_code(page, source: str, editor_id: str = "reward-code") -> None:
    """Replaces the code in a code editor (the reward code's, or another's), as a user types it."""
    editor = page.locator(f"#{editor_id} .cm-content")
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


def open_all_settings(page) -> None:
    """Opens the Train tab's collapsed "All settings" groups (the essentials are always shown)."""
    settings = page.locator("#all-settings")
    if not page.locator("#hp-schedule-save-every").first.is_visible():
        settings.get_by_text("All settings").first.click()
        page.locator("#hp-schedule-save-every").first.wait_for(state="visible")


def choose(page, element_id: str, option: str) -> None:
    """Picks `option` in the dropdown `element_id`, as a user does."""
    page.locator(f"#{element_id} input").click()
    page.get_by_role("option", name=option, exact=True).click()


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


def monitor_step(page) -> int | None:
    """The step the Monitor tab's progress line shows, or None before it shows one."""
    match = re.search(r"step (\d+) of", page.locator("#monitor-progress").inner_text())
    return int(match.group(1)) if match else None


def configure_tiny_run(page, model_dir: Path, dataset: Path, name: str, max_steps: int) -> None:
    """Fills the Train tab of a freshly loaded page for a cheap run: the tiny model, an uploaded
    dataset, one reward function, one prompt and four completions of up to 16 tokens per step."""
    # The page's load event fills the reward editor and its weights: wait for it, or it overwrites ours.
    wait_for_text(page.locator("#check-message"), r"reward functions? found")
    set_code(page, REWARD_CODE)
    page.locator("#check-rewards").click()
    wait_for_text(page.locator("#check-message"), r"1 reward function found")
    with page.expect_file_chooser() as chooser:
        page.locator("#dataset-upload").click()
    chooser.value.set_files(str(dataset))
    wait_for_text(page.locator("#dataset-message"), rf"{re.escape(dataset.name)}: \d+ rows")
    page.locator("#model-path textarea, #model-path input").first.fill(str(model_dir))
    page.locator("#run-name textarea, #run-name input").first.fill(name)
    set_number(page, "hp-optim-prompts-per-step", 1)
    set_number(page, "hp-sampling-num-generations", 4)
    set_number(page, "hp-sampling-max-completion-length", 16)
    set_number(page, "hp-schedule-max-steps", max_steps)
    wait_for_text(page.locator("#batch-summary"), r"4 completions per step")
