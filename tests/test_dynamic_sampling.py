"""DAPO's dynamic sampling: groups with no reward spread are dropped and more prompts drawn, counted
in the metrics; and the rollout pieces it is built from (select groups, concatenate)."""

import json

import pytest
import torch

from rft.grpo.sampler import Rollout
from rft.grpo.trainer import train
from rft.runs import read_metrics, read_rollouts
from test_trainer_e2e import prompts_file, tiny_config  # noqa: F401 (a fixture)

# Only prompts of topic t0 (a third of them) can score differently within their group.
ONLY_T0_VARIES = (
    "def length_on_t0(prompt, completion, example):\n"
    "    return len(completion) / 20 if example['topic'] == 't0' else 0.0\n"
)


def tiny_rollout(groups: int, group_size: int, prompt_width: int, completion_width: int, offset: int) -> Rollout:
    rows = groups * group_size
    return Rollout(
        prompt_ids=torch.arange(groups * prompt_width).reshape(groups, prompt_width) + offset,
        prompt_mask=torch.ones(groups, prompt_width, dtype=torch.long),
        group_size=group_size,
        completion_ids=torch.arange(rows * completion_width).reshape(rows, completion_width) + offset,
        completion_mask=torch.ones(rows, completion_width),
        completions=[f"{offset}-{r}" for r in range(rows)],
        truncated=torch.zeros(rows, dtype=torch.bool),
        generate_seconds=1.0,
    )


def test_selected_groups_of_two_rollouts_concatenate_with_padding():
    first = tiny_rollout(3, 2, prompt_width=4, completion_width=5, offset=0).select_groups([2, 0])
    assert first.completions == ["0-4", "0-5", "0-0", "0-1"]
    assert first.prompt_ids[0].tolist() == [8, 9, 10, 11]
    second = tiny_rollout(1, 2, prompt_width=6, completion_width=3, offset=100)
    both = Rollout.concatenate([first, second], pad_id=-1)

    assert both.prompt_ids.shape == (3, 6) and both.completion_ids.shape == (6, 5)
    assert both.prompt_ids[0].tolist() == [-1, -1, 8, 9, 10, 11]  # padded on the left
    assert both.prompt_mask[0].tolist() == [0, 0, 1, 1, 1, 1]
    assert both.completion_ids[4].tolist() == [100, 101, 102, -1, -1]  # padded on the right
    assert both.completion_mask[4].tolist() == [1, 1, 1, 0, 0]
    assert both.completions[-1] == "100-1" and both.generate_seconds == 2.0


@pytest.mark.slow
def test_dynamic_sampling_keeps_only_groups_with_a_reward_spread(tmp_path, tiny_model_dir, prompts_file):  # noqa: F811
    settings = [f"rewards.source={json.dumps(ONLY_T0_VARIES)}", "optim.prompts_per_step=2", "schedule.max_steps=3",
                "sampling.max_completion_length=12"]
    plain = train(tiny_config(tiny_model_dir, prompts_file, set=settings), tmp_path / "plain", progress=False)
    dynamic = train(tiny_config(tiny_model_dir, prompts_file,
                                set=settings + ["grpo.dynamic_sampling=true", "grpo.max_sampling_draws=8"]),
                    tmp_path / "dynamic", progress=False)

    assert read_metrics(plain)["frac_reward_zero_std"].max() > 0  # without it, flat groups reach the update
    assert "dynamic_sampling/sampled_groups" not in read_metrics(plain).columns
    metrics = read_metrics(dynamic)
    assert (metrics["frac_reward_zero_std"] == 0).all()
    assert metrics["dynamic_sampling/dropped_groups"].sum() > 0
    for step in metrics["step"]:
        groups = read_rollouts(dynamic, step=int(step))["groups"]
        assert len(groups) == 2 and all(group["example"]["topic"] == "t0" for group in groups)
        assert metrics.loc[step, "dynamic_sampling/sampled_groups"] == 2 + metrics.loc[step, "dynamic_sampling/dropped_groups"]
        # The reward of everything sampled counts the dropped groups too: here every total is >= 0,
        # so its sum covers at least the trained-on groups' sum.
        sampled_sum = metrics.loc[step, "dynamic_sampling/sampled_reward"] * 4 * metrics.loc[step, "dynamic_sampling/sampled_groups"]
        assert sampled_sum >= metrics.loc[step, "reward"] * 4 * 2 - 1e-6


def test_the_signal_chart_shows_the_share_dynamic_sampling_dropped():
    import pandas as pd

    from ui.charts import monitor_figures

    metrics = pd.DataFrame({"step": [1, 2], "frac_reward_zero_std": [0.0, 0.0],
                            "dynamic_sampling/sampled_groups": [4, 8],
                            "dynamic_sampling/dropped_groups": [2, 6]}).set_index("step", drop=False)
    figure = monitor_figures(metrics, pd.DataFrame())["signal"]
    traces = {trace.name: list(trace.y) for trace in figure.data}
    assert traces["dropped by dynamic sampling"] == [0.5, 0.75]
    assert traces["trained on"] == [0.0, 0.0]

    metrics["reward"], metrics["dynamic_sampling/sampled_reward"] = [1.0, 1.0], [0.4, 0.6]
    reward = monitor_figures(metrics, pd.DataFrame())["reward"]
    assert [list(trace.y) for trace in reward.data if trace.name == "every sampled group"] == [[0.4, 0.6]]
