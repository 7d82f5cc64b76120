"""Fault suite, reward code: every way a reward function can misbehave, inside one real training run.

The run must finish with every step on disk, a good function scored by whatever worker survived
the others, and each misbehaviour visible where a user looks: the Monitor tab's log tail
(rft.runs.tail_logs) and the per-function `missing` counts of the metrics.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from fault_log import record_fault

from rft.config import DataConfig, ModelConfig, OptimConfig, RewardsConfig, RunConfig, SamplingConfig, ScheduleConfig
from rft.grpo.trainer import train
from rft.runs import read_metrics, read_status, tail_logs

GROUP = 4
STEPS = 2

FAULTY_REWARDS = textwrap.dedent('''
    import os
    import signal
    import sys

    def raises(prompt, completion, example):
        raise RuntimeError("reward bug on purpose")

    def loops_forever(prompts, completions, **columns):
        while True:
            pass

    def calls_sys_exit(prompt, completion, example):
        sys.exit(3)

    def calls_os_exit(prompts, completions, **columns):
        os._exit(7)

    def allocates_gigabytes(prompt, completion, example):
        return len(bytearray(16 * 2**30))

    def prints_megabytes(prompt, completion, example):
        print("x" * 5_000_000)
        return 0.0

    def returns_a_string(prompt, completion, example):
        return "1.0"

    def returns_none(prompt, completion, example):
        return None

    def returns_nan(prompt, completion, example):
        return float("nan")

    def returns_inf(prompt, completion, example):
        return float("inf")

    def returns_a_list_of_the_wrong_length(prompts, completions, **columns):
        return [1.0]

    def leaves_an_alarm_set(prompt, completion, example):
        signal.alarm(1)  # would kill a worker that did not cancel it
        return 0.5

    def times_itself_with_an_alarm(prompt, completion, example):
        def give_up(signum, frame):
            raise TimeoutError("took too long")
        signal.signal(signal.SIGALRM, give_up)
        signal.alarm(2)
        try:
            return 1.0
        finally:
            signal.alarm(0)

    def good(prompt, completion, example):
        return -len(completion) / 20
''')

BATCHED = {"loops_forever", "calls_os_exit", "returns_a_list_of_the_wrong_length"}
# function: what the Monitor tab's log must show for it (None: the function is fine and must score)
EXPECTED = {
    "raises": "RuntimeError: reward bug on purpose",
    "loops_forever": "timed out after 1 s; a new worker took over",
    "calls_sys_exit": "SystemExit: 3",
    "calls_os_exit": "exit code 7); a new worker took over",
    "allocates_gigabytes": "MemoryError",
    "returns_a_string": "returned str '1.0'",
    "returns_inf": "returned inf; a reward must be finite",
    "returns_a_list_of_the_wrong_length": f"returned a list of 1 rewards for {GROUP} completions",
    "prints_megabytes": "[output truncated:",
    "returns_none": None,  # None and NaN mean "not applicable" (the spec): missing, but no error
    "returns_nan": None,
    "leaves_an_alarm_set": None,
    "times_itself_with_an_alarm": None,
}
NOT_APPLICABLE = {"returns_none", "returns_nan"}
SCORED = {"prints_megabytes", "leaves_an_alarm_set", "times_itself_with_an_alarm", "good"}


@pytest.fixture(scope="module")
def faulty_run(tmp_path_factory, tiny_model_dir) -> Path:
    folder = tmp_path_factory.mktemp("reward-faults")
    dataset = folder / "prompts.jsonl"
    dataset.write_text("".join(json.dumps({"prompt": f"Say something, number {i}."}) + "\n" for i in range(4)))
    config = RunConfig(
        name="reward-faults",
        model=ModelConfig(name_or_path=str(tiny_model_dir)),
        data=DataConfig(preset=None, path=str(dataset)),
        rewards=RewardsConfig(source=FAULTY_REWARDS, timeout_s=1.0),
        sampling=SamplingConfig(num_generations=GROUP, max_completion_length=8, top_k=10),
        optim=OptimConfig(learning_rate=1e-2),
        schedule=ScheduleConfig(max_steps=STEPS, save_every=0),
    )
    return train(config, folder / "run", progress=False)


def test_every_faulty_reward_is_survived_shown_and_recorded(faulty_run):
    status = read_status(faulty_run)
    metrics = read_metrics(faulty_run)
    shown = tail_logs(faulty_run, max_lines=10_000)
    run_went_on = status["state"] == "finished" and metrics["step"].tolist() == list(range(1, STEPS + 1))
    lost = STEPS - len(metrics)

    outcomes = {}
    for name, message in EXPECTED.items():
        missing = int(metrics[f"rewards/{name}/missing"].sum())
        calls = STEPS * (1 if name in BATCHED else GROUP)
        if name in SCORED:
            handled = missing == 0
        else:
            handled = missing == STEPS * GROUP
        if message is not None:
            handled = handled and message in shown
        outcomes[name] = handled
        record_fault(f"reward code: {name.replace('_', ' ')}", calls, calls if run_went_on and handled else 0, lost)

    assert run_went_on, status
    assert outcomes == dict.fromkeys(EXPECTED, True), {n: ok for n, ok in outcomes.items() if not ok}
    assert (metrics["rewards/good/missing"] == 0).all(), "the last function lost scores to the others' faults"


def test_a_flood_of_prints_stays_bounded_in_the_logs(faulty_run):
    # 5 MB printed by each of STEPS x GROUP calls; at most 64 KB per function per step reach the log.
    assert (faulty_run / "logs.txt").stat().st_size < STEPS * 200 * 1024
