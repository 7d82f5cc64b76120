"""logs.txt as a person reads it: one line per step, a summary at the end, a warning when no group
carries a learning signal, and no progress bars or library deprecation notices."""

import pandas as pd
import pytest

from rft import jobs
from rft.grpo.trainer import run_summary, step_log_line, train
from rft.runs import effective_state, read_status
from test_trainer_e2e import prompts_file, tiny_config  # noqa: F401 (a fixture)
from waiting import wait_for

CONSTANT = "def constant(prompt, completion, example):\n    return 1.0\n"


def test_the_step_line_and_the_summary():
    row = {"reward": 0.5, "reward_std": 0.25, "kl": 0.00123, "loss": None, "frac_reward_zero_std": 0.5,
           "completion_length/mean": 12.0, "time/step": 3.21, "time/generate": 2.0, "time/score": 0.01,
           "time/train": 1.2}
    assert step_log_line(row) == ("reward 0.500 ± 0.250 · kl 0.00123 · loss - · flat groups 50% · length 12.0 · "
                                  "3.2 s (generate 2.0, score 0.0, train 1.2)")
    assert "kl 6.5e-06 · loss -2.1e-07" in step_log_line({**row, "kl": 6.5e-6, "loss": -2.1e-7})
    metrics = pd.DataFrame({"step": range(1, 11), "reward": [0.0] * 5 + [1.0] * 5})
    assert run_summary(metrics, 125) == ("finished: 10 steps in 2m 05s; mean reward 0.000 over the first 5 "
                                         "step(s), 1.000 over the last 5")
    assert run_summary(metrics, 65, resumed_from=6).startswith("finished: 10 steps, steps 7 to 10 in 1m 05s after the resume;")


@pytest.mark.slow
def test_a_run_without_any_learning_signal_is_warned_about(tmp_path, tiny_model_dir, prompts_file):  # noqa: F811
    config = tiny_config(tiny_model_dir, prompts_file, set=["schedule.max_steps=4"])
    config.rewards.source = CONSTANT
    logs = (train(config, tmp_path / "run", progress=False) / "logs.txt").read_text()
    assert logs.count("every completion of each group got the same reward") == 1
    assert "[step 3] warning:" in logs
    assert "[step 4] reward 1.000 ± 0.000" in logs
    assert "finished: 4 steps in" in logs


@pytest.mark.slow
def test_a_job_log_has_no_progress_bars_or_deprecation_notices(tmp_path, tiny_model_dir, prompts_file):  # noqa: F811
    run_dir = jobs.start_job(tiny_config(tiny_model_dir, prompts_file, set=["schedule.max_steps=2"]), tmp_path / "runs")
    wait_for(lambda: effective_state(read_status(run_dir)) == "finished", 120, "the job to finish")
    logs = (run_dir / "logs.txt").read_text()
    assert "[step 2] reward" in logs and "finished: 2 steps" in logs
    assert "Loading weights" not in logs and "Warning" not in logs and "%|" not in logs


def test_monitor_warns_when_the_last_steps_carried_no_signal():
    from rft.monitoring import no_signal_warning
    from ui.monitor_tab import progress_html

    flat = pd.DataFrame({"step": [1, 2, 3], "frac_reward_zero_std": [1.0, 1.0, 1.0]}).set_index("step", drop=False)
    assert "No learning signal" in no_signal_warning(flat)
    assert no_signal_warning(flat.iloc[:2]) is None  # too early to tell
    recovered = flat.assign(frac_reward_zero_std=[1.0, 1.0, 0.5])
    assert no_signal_warning(recovered) is None
    status = {"step": 3, "max_steps": 10, "started_at": 0.0}
    assert "notice-warn" in progress_html("run", "running", status, flat)
    assert "notice-warn" not in progress_html("run", "running", status, recovered)
