"""The Compare, Play Wordle, Inspect and Export tabs in a real Chromium, on a finished 3-step run of
the tiny model: generate and compare, compare two steps, play a whole versus game and watch one,
inspect a completion's tokens, export a checkpoint and download the zip.

Screenshots land in tests/artifacts/screenshots/ for review.
"""

from __future__ import annotations

import zipfile

import pytest
from dashboard_driver import open_tab, running_dashboard, screenshot, set_number, wait_for_text, wait_until

pytestmark = pytest.mark.browser

PERSON_GUESSES = ("stare", "pound", "light", "mercy", "bigot", "fuzzy")  # none is CRANE


@pytest.fixture(scope="module")
def dashboard_with_run(tiny_run_dir):
    """`python app.py` over the runs directory that holds the tiny run; yields (url, run directory)."""
    runs_dir = tiny_run_dir.parent
    with running_dashboard(runs_dir, runs_dir.parent / "dashboard-more-tabs.log") as (url, _):
        yield url, tiny_run_dir


def wait_for_choice(page, element_id: str, pattern: str) -> str:
    """Waits until a dropdown shows a value matching `pattern`."""
    return wait_until(page.locator(f"#{element_id} input").input_value, pattern)


def test_compare_play_inspect_export(dashboard_with_run, page, tmp_path):
    url, run_dir = dashboard_with_run
    page.goto(url)
    page.get_by_role("tab", name="Train", exact=True).wait_for()

    # Compare: the base model against the last checkpoint, two completions each.
    open_tab(page, "Compare")
    wait_for_choice(page, "compare-prompt", r"Say something short, number 0")
    # The policies follow the chosen run: where it started (its base model) against its last checkpoint.
    wait_for_choice(page, "compare-policy-a", r"base model")
    wait_for_choice(page, "compare-policy-b", rf"{run_dir.name} · step 3")
    set_number(page, "compare-count", 2)
    tables = []
    for press in range(2):  # the same seed twice: the same completions, the first press included
        page.locator("#compare-generate").click()
        wait_for_text(page.locator("#compare-message"), r"same for both sides", timeout_s=90)
        wait_for_text(page.locator("#compare-summary-a"), r"base model[\s\S]*mean total -?\d\.\d{3}")
        wait_for_text(page.locator("#compare-summary-b"), rf"{run_dir.name} · step 3[\s\S]*mean total")
        both = lambda: "\n".join(page.locator(f"#compare-table-{side}").inner_text() for side in "ab")  # noqa: E731
        # Done, not pending: a pending table shows the earlier press's rows under "processing" or a timer ("0.1s").
        tables.append(wait_until(both, r"(?m)\A(?![\s\S]*processing)(?![\s\S]*^\d+(\.\d+)?s$)[\s\S]*shorter_is_better"))
    assert tables[0] == tables[1]
    assert page.locator("#compare-table-b [role=grid]").get_attribute("aria-rowcount") == "3"  # header + 2
    assert page.locator("#compare-cancel").first.is_disabled()
    # The same prompt at steps 1 and 3, from the rollouts.
    page.locator("#compare-show-steps").click()
    wait_for_text(page.locator("#compare-steps-summary-a"), r"step 1[\s\S]*mean total")
    wait_for_text(page.locator("#compare-steps-summary-b"), r"step 3[\s\S]*mean total")
    screenshot(page, "5-compare")

    # Play Wordle, versus: a typed secret, a refused word, then six guesses against the checkpoint.
    open_tab(page, "Play Wordle")
    set_number(page, "play-max-tokens", 8)
    page.locator("#versus-secret input").fill("crane")
    page.locator("#versus-new").click()
    wait_for_text(page.locator("#versus-message"), r"New game on the secret typed in")
    guess_box = page.locator("#versus-guess input")
    guess_box.fill("zzzzz")
    page.locator("#versus-submit").click()
    wait_for_text(page.locator("#versus-message"), r"ZZZZZ is not in the word list")
    for turn, word in enumerate(PERSON_GUESSES, start=1):
        guess_box.fill(word)
        page.locator("#versus-submit").click()
        # The message comes along, so that a turn that fails says why.
        wait_until(lambda: page.locator("#versus-reasoning").inner_text() + " | message: " +
                   page.locator("#versus-message").inner_text(), rf"Turn {turn}:", timeout_s=120)
    wait_for_text(page.locator("#versus-message"), r"Nobody solved it\. The secret was CRANE")
    person_board = page.locator("#versus-person-board")
    assert person_board.locator(".tile-empty").count() == 0
    # STARE against CRANE: A and E in place, R elsewhere.
    first_row = person_board.locator(".board-row").first
    assert first_row.locator(".tile-correct").count() == 2 and first_row.locator(".tile-present").count() == 1
    assert page.locator("#versus-model-board .board-invalid").count() == 6  # random weights: invalid, each a turn
    page.locator("#versus-reasoning summary").first.click()
    assert page.locator("#versus-reasoning details").first.get_attribute("open") is not None
    screenshot(page, "6-play-versus")

    # Play Wordle, watch: the checkpoint plays alone; an empty secret is a random held-out word.
    page.get_by_role("tab", name="Watch", exact=True).click()
    page.locator("#watch-play").click()
    wait_for_text(page.locator("#watch-message"), r"Not solved; the secret was [A-Z]{5}", timeout_s=90)
    page.locator("#watch-secret input").fill("crane")
    page.locator("#watch-play").click()
    wait_for_text(page.locator("#watch-message"), r"Not solved; the secret was CRANE", timeout_s=90)
    turns = page.locator("#watch-turns .watch-turn")
    assert turns.count() == 6
    assert "output_format_check" in turns.first.inner_text() and "guess_value" in turns.first.inner_text()
    assert page.locator("#watch-stop").first.is_disabled()
    screenshot(page, "7-play-watch")
    # A long game shows its progress and stops on Stop, within a token.
    set_number(page, "play-max-tokens", 4000)
    page.locator("#watch-play").click()
    wait_for_text(page.locator("#watch-message"), r"turn \d of 6: writing its answer · \d+ s")
    page.locator("#watch-stop").click()
    wait_for_text(page.locator("#watch-message"), r"^Stopped\.$")
    screenshot(page, "7-play-watch-stopped")
    assert page.locator("#watch-stop").first.is_disabled()
    set_number(page, "play-max-tokens", 8)

    # Inspect: the tokens of a step-3 completion under the sampling, updated and reference policies.
    open_tab(page, "Inspect")
    wait_for_choice(page, "inspect-completion", r"group 0 · sample 0")
    page.locator("#inspect-go").click()
    wait_for_text(page.locator("#inspect-message"), rf"Step 3 · advantage[\s\S]*Sampled by {run_dir.name} · step 2",
                  timeout_s=90)
    assert page.locator("#inspect-tokens .tok").count() >= 1
    assert "ratio" in page.locator("#inspect-tokens .tok").first.get_attribute("title")
    assert int(page.locator("#inspect-kl [role=grid]").get_attribute("aria-rowcount")) >= 2  # header + tokens
    screenshot(page, "8-inspect")

    # Export: step 3 as a folder and a zip, downloaded through the browser.
    open_tab(page, "Export")
    wait_for_choice(page, "export-step", r"^3$")
    page.locator("#export-go").click()
    wait_for_text(page.locator("#export-message"), r"Exported[\s\S]*step 3[\s\S]*Zip:", timeout_s=60)
    with page.expect_download() as download:
        page.locator("#export-download").click()
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    assert saved.name == f"{run_dir.name}-step-3.zip"
    with zipfile.ZipFile(saved) as archive:
        assert {"adapter_model.safetensors", "adapter_config.json", "README.md"} <= set(archive.namelist())
    assert (run_dir.parent / "exports" / f"{run_dir.name}-step-3" / "adapter_config.json").is_file()
    screenshot(page, "9-export")
