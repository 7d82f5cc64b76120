"""Evaluate any dataset, in a real Chromium: a run of a plain prompt file that holds out rows and
evaluates them every step shows its held-out chart in Monitor; the Runs tab evaluates any of its
checkpoints with the run's reward functions, shows progress while it runs, and Cancel stops it.

Screenshots land in tests/artifacts/screenshots/ for review.
"""

from __future__ import annotations

import json

import pytest
from dashboard_driver import choose, open_tab, running_dashboard, screenshot, set_number, wait_for_text

pytestmark = pytest.mark.browser

REWARDS = ("def short(prompt, completion, example):\n    return 1.0 if len(completion) < 20 else 0.0\n\n"
           "def shorter_is_better(prompt, completion, example):\n    return -len(completion) / 20\n")


@pytest.fixture(scope="module")
def held_out_run(tmp_path_factory, tiny_model_dir):
    """A finished 2-step run of the tiny model holding out 400 of its 420 rows, evaluated at every step."""
    from rft.config import DataConfig, ModelConfig, OptimConfig, RewardsConfig, RunConfig, SamplingConfig, ScheduleConfig
    from rft.grpo.trainer import train

    root = tmp_path_factory.mktemp("held-out")
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Say something short, number {i}."}) + "\n" for i in range(420)))
    config = RunConfig(
        name="held-out",
        model=ModelConfig(name_or_path=str(tiny_model_dir), device="cpu"),
        data=DataConfig(preset=None, path=str(prompts), eval_size=400),
        rewards=RewardsConfig(source=REWARDS, timeout_s=5.0),
        sampling=SamplingConfig(num_generations=4, max_completion_length=24, top_k=10),
        optim=OptimConfig(learning_rate=1e-2),
        schedule=ScheduleConfig(max_steps=2, save_every=1, eval_every=1),
    )
    return train(config, root / "runs" / "held-out-run", progress=False)


def test_held_out_chart_and_evaluating_any_checkpoint(held_out_run, page):
    runs_dir = held_out_run.parent
    with running_dashboard(runs_dir, runs_dir.parent / "dashboard-held-out.log") as (url, _):
        page.goto(url)
        open_tab(page, "Monitor")
        chart = page.locator("#chart-held-out")
        wait_for_text(chart, r"Held-out rows")
        assert "shorter_is_better" in chart.inner_text() and "reward" in chart.inner_text()
        chart.scroll_into_view_if_needed()
        screenshot(page, "held-out-monitor")

        open_tab(page, "Runs")
        choose(page, "runs-selected", "held-out-run")
        choose(page, "eval-checkpoint", "step 1")
        set_number(page, "eval-count", 40)
        page.locator("#eval-run").click()
        result = page.locator("#eval-result")
        text = wait_for_text(result, r"short \(pass rate\)", timeout_s=120)
        assert "reward (weighted sum)" in text and "95% interval" in text
        assert 'python -m rft eval run' in text and '--checkpoint "step 1" --rows 40' in text
        result.scroll_into_view_if_needed()
        screenshot(page, "held-out-evaluate")

        # A long evaluation shows its progress, and Cancel stops it.
        set_number(page, "eval-count", 400)
        page.locator("#eval-run").click()
        wait_for_text(result, r"Evaluating step 1 of held-out-run on 400 held-out rows: .* s")
        screenshot(page, "held-out-evaluate-progress")
        page.locator("#eval-cancel").click()
        wait_for_text(result, r"Evaluation cancelled\.")
        assert page.locator("#eval-cancel button, button#eval-cancel").first.is_disabled()
