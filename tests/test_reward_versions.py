"""Reward code changed while a run trains: versions, the step each took effect, refusals, resume."""

import pytest

from rft import jobs
from rft.rewards import versions as reward_versions
from rft.runs import effective_state, read_metrics, read_rollouts, read_status
from test_trainer_e2e import prompts_file, tiny_config  # noqa: F401 (a fixture)
from waiting import wait_for

LONGER_IS_BETTER = "def longer_is_better(prompt, completion, example):\n    return len(completion) / 20\n"


def test_versions_record_when_each_took_effect_and_a_resume_forgets_later_ones(tmp_path):
    first = reward_versions.record_version(tmp_path, "def a(prompt, completion, example):\n    return 1.0\n", {}, 1)
    second = reward_versions.record_version(tmp_path, LONGER_IS_BETTER, {"longer_is_better": 2.0}, 5)
    assert (first.number, second.number) == (1, 2)
    assert (tmp_path / "rewards" / "v2.py").read_text() == LONGER_IS_BETTER
    assert reward_versions.version_in_force(tmp_path, 4) == first
    assert reward_versions.version_in_force(tmp_path, 5) == second
    assert reward_versions.version_in_force(tmp_path, 0) == first  # a fresh start scores with version 1

    reward_versions.truncate_after(tmp_path, 4)  # resuming from a checkpoint before the change
    assert reward_versions.versions(tmp_path) == [first]
    assert not (tmp_path / "rewards" / "v2.py").exists()
    third = reward_versions.record_version(tmp_path, LONGER_IS_BETTER, {}, 7)
    assert third.number == 2 and reward_versions.version_in_force(tmp_path, 9) == third

    reward_versions.truncate_after(tmp_path, 0)  # a fresh start in the same directory
    assert reward_versions.versions(tmp_path) == []


def test_a_request_is_taken_once(tmp_path):
    assert reward_versions.take_request(tmp_path) is None
    reward_versions.request_change(tmp_path, LONGER_IS_BETTER, {"longer_is_better": 3.0})
    request = reward_versions.take_request(tmp_path)
    assert request["source"] == LONGER_IS_BETTER and request["weights"] == {"longer_is_better": 3.0}
    assert reward_versions.take_request(tmp_path) is None


@pytest.mark.slow
def test_a_running_job_takes_an_edit_at_the_next_step_and_refuses_a_broken_one(tmp_path, tiny_model_dir,
                                                                                  prompts_file):  # noqa: F811
    config = tiny_config(tiny_model_dir, prompts_file, set=["schedule.max_steps=500", "schedule.save_every=0"])
    run_dir = jobs.start_job(config, tmp_path / "runs")
    wait_for(lambda: read_status(run_dir).get("step", 0) >= 1, 120, "a first step")

    reward_versions.request_change(run_dir, "def broken(prompt, completion, example):\n    return missing(\n", {})
    refused = wait_for(lambda: reward_versions.last_outcome(run_dir), 60, "the broken edit's outcome")
    assert refused["state"] == "refused" and "syntax" in refused["message"].lower()

    reward_versions.request_change(run_dir, LONGER_IS_BETTER, {"longer_is_better": 2.0})
    applied = wait_for(lambda: (reward_versions.last_outcome(run_dir) or {}).get("state") == "applied"
                       and reward_versions.last_outcome(run_dir), 60, "the edit to take effect")
    changed_at = applied["from_step"]
    wait_for(lambda: read_status(run_dir).get("step", 0) >= changed_at, 60, "a step scored by the edit")
    jobs.stop_job(run_dir)
    wait_for(lambda: effective_state(read_status(run_dir)) == "stopped", 60, "the job to stop")

    assert [(v.number, v.from_step) for v in reward_versions.versions(run_dir)] == [(1, 1), (2, changed_at)]
    metrics = read_metrics(run_dir).set_index("step")
    assert (metrics.loc[:changed_at - 1, "reward_version"] == 1).all()
    assert (metrics.loc[changed_at:, "reward_version"] == 2).all()
    assert metrics.loc[changed_at:, "rewards/longer_is_better/mean"].notna().all()
    group = read_rollouts(run_dir, step=changed_at)["groups"][0]
    assert group["reward_version"] == 2 and set(group["rewards"]) == {"longer_is_better"}
    assert group["total"] == pytest.approx([2.0 * len(c) / 20 for c in group["completions"]], abs=1e-5)
    logs = (run_dir / "logs.txt").read_text()
    assert "the edited code was refused, version 1 stays" in logs
    assert "rewards: version 2 in force from this step" in logs


def test_every_step_chart_marks_where_edited_reward_code_took_effect():
    import pandas as pd

    from rft.monitoring import reward_version_changes
    from ui.charts import monitor_figures

    metrics = pd.DataFrame({"step": [1, 2, 3, 4, 5], "reward": [0.1, 0.2, 0.3, 0.2, 0.4],
                            "reward_version": [1, 1, 2, 2, 3]}).set_index("step", drop=False)
    assert reward_version_changes(metrics) == [(3, 2), (5, 3)]
    assert reward_version_changes(metrics.drop(columns="reward_version")) == []

    figures = monitor_figures(metrics, pd.DataFrame())
    marked = {name for name, figure in figures.items()
              if [shape.x0 for shape in figure.layout.shapes if shape.line.dash == "dot"] == [3, 5]}
    assert {"reward", "kl", "loss", "length", "time"} <= marked
    assert "rewards v2" in [a.text for a in figures["reward"].layout.annotations]
