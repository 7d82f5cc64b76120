"""Fault suite, trainer: SIGKILL at chosen points of chosen steps, then resume, over and over.

Every kill must leave a run that resumes from its last complete checkpoint, with one metrics line
and one rollouts line per step (none missing, none twice, no half line), and no reward worker
left behind. `make faults` repeats the kill schedule (RFT_FAULT_REPEATS) on a longer run.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections import Counter
from pathlib import Path

import pytest
from fault_log import record_fault, repeats

from rft import jobs
from rft.config import DataConfig, ModelConfig, OptimConfig, RewardsConfig, RunConfig, SamplingConfig, ScheduleConfig
from rft.faults import FAULT_POINT_VARIABLE, FAULT_POINTS
from rft.grpo.trainer import train
from rft.runs import effective_state, list_checkpoints, read_status
from waiting import wait_for

SAVE_EVERY = 2
# One block of the kill schedule: (fault point, step within the block). "checkpoint" must name a
# step that saves (a multiple of SAVE_EVERY), or the trainer never reaches that point.
KILLS_PER_BLOCK = [("generate", 3), ("optimizer", 5), ("checkpoint", 6), ("metrics", 7)]
BLOCK_STEPS = 8
TRAINER_TIMEOUT_S = 180  # a trainer start (torch, the model, a reward worker) on two busy cores
WORKER_MARK_VARIABLE = "RFT_FAULT_TEST_MARK"  # inherited by the trainer and its reward worker

SHORT_IS_BETTER = "def shorter_is_better(prompt, completion, example):\n    return -len(completion) / 20\n"


def kill_schedule(blocks: int) -> list[tuple[str, int]]:
    return [(point, block * BLOCK_STEPS + step) for block in range(blocks) for point, step in KILLS_PER_BLOCK]


def last_complete_checkpoint_before(step: int) -> int:
    """Where a trainer killed anywhere in `step` resumes: the step's own checkpoint, if it was
    being written, is incomplete, so it is the last save before that step."""
    return (step - 1) // SAVE_EVERY * SAVE_EVERY


def record_problems(run_dir: Path, through_step: int) -> int:
    """Steps 1..through_step missing or written twice, in metrics and rollouts, plus lines that are not whole JSON."""
    problems = 0
    for name in ("metrics.jsonl", "rollouts.jsonl"):
        text = (run_dir / name).read_text(encoding="utf-8")
        *lines, tail = text.split("\n")
        problems += tail != ""  # a half line at the end
        steps = []
        for line in lines:
            try:
                steps.append(json.loads(line)["step"])
            except (json.JSONDecodeError, KeyError, TypeError):
                problems += 1
        counts = Counter(steps)
        problems += sum(1 for step in range(1, through_step + 1) if counts[step] != 1)
    return problems


def processes_marked(mark: str) -> list[int]:
    """Live processes started with WORKER_MARK_VARIABLE=mark in their environment."""
    wanted = f"{WORKER_MARK_VARIABLE}={mark}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if wanted in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"Say something short, number {i}."}) + "\n" for i in range(16)))
    return path


def tiny_config(model_dir: Path, prompts_file: Path, max_steps: int) -> RunConfig:
    return RunConfig(
        name="faults",
        model=ModelConfig(name_or_path=str(model_dir)),
        data=DataConfig(preset=None, path=str(prompts_file)),
        rewards=RewardsConfig(source=SHORT_IS_BETTER, timeout_s=5.0),
        sampling=SamplingConfig(num_generations=4, max_completion_length=8, top_k=10),
        optim=OptimConfig(learning_rate=1e-2),
        schedule=ScheduleConfig(max_steps=max_steps, save_every=SAVE_EVERY),
    )


def wait_until_trainer_ends(run_dir: Path, kill: tuple[str, int] | None) -> None:
    if kill:
        wait_for(lambda: effective_state(read_status(run_dir)) == "failed", TRAINER_TIMEOUT_S, "the kill at %s:%d" % kill)
    else:
        wait_for(lambda: read_status(run_dir).get("state") == "finished", TRAINER_TIMEOUT_S, "the run to finish")


def resumed_from(run_dir: Path) -> list[int]:
    return [int(step) for step in re.findall(r"resumed from step-(\d+)", (run_dir / "logs.txt").read_text())]


def test_sigkill_at_every_fault_point_resumes_from_the_last_complete_checkpoint(
        tmp_path, tiny_model_dir, prompts_file, monkeypatch):
    kills = kill_schedule(repeats())
    max_steps = repeats() * BLOCK_STEPS
    config = tiny_config(tiny_model_dir, prompts_file, max_steps)
    mark = uuid.uuid4().hex
    monkeypatch.setenv(WORKER_MARK_VARIABLE, mark)
    tried, survived, lost = Counter(), Counter(), Counter()

    monkeypatch.setenv(FAULT_POINT_VARIABLE, "%s:%d" % kills[0])
    run_dir = jobs.start_job(config, tmp_path / "runs")
    try:
        for index, (point, step) in enumerate(kills):
            wait_until_trainer_ends(run_dir, (point, step))
            tried[point] += 1
            status = read_status(run_dir)
            # A killed trainer leaves "running" on disk, with the last step it finished.
            killed_where_asked = status.get("state") == "running" and status.get("step") == step - 1
            no_worker_left = bool(wait_for(lambda: not processes_marked(mark), 10, "the reward worker to exit"))
            if point in ("generate", "metrics"):
                # A SIGKILL in the middle of a large write() can leave part of a line; this is that part.
                name = "rollouts.jsonl" if point == "generate" else "metrics.jsonl"
                with open(run_dir / name, "a", encoding="utf-8") as f:
                    f.write('{"step": %d, "reward": 0.' % step)

            following = kills[index + 1] if index + 1 < len(kills) else None
            if following:
                monkeypatch.setenv(FAULT_POINT_VARIABLE, "%s:%d" % following)
            else:
                monkeypatch.delenv(FAULT_POINT_VARIABLE)
            jobs.resume_job(run_dir)
            wait_until_trainer_ends(run_dir, following)

            # The resumed trainer got past `step` (it was killed later, or finished), so every step
            # up to `step` must now be on disk exactly once.
            resumed_right = resumed_from(run_dir)[index:index + 1] == [last_complete_checkpoint_before(step)]
            lost[point] += record_problems(run_dir, through_step=step)
            survived[point] += killed_where_asked and no_worker_left and resumed_right
    finally:
        for point in FAULT_POINTS:
            if tried[point]:
                record_fault(f"SIGKILL {FAULT_POINTS[point]}", tried[point], survived[point], lost[point])

    assert survived == tried, f"tried {dict(tried)}, survived {dict(survived)}"
    assert sum(lost.values()) == 0, f"committed data lost: {dict(lost)}"
    assert resumed_from(run_dir) == [last_complete_checkpoint_before(step) for _, step in kills]
    assert record_problems(run_dir, through_step=max_steps) == 0
    checkpoints = list_checkpoints(run_dir)
    assert checkpoints == list(range(SAVE_EVERY, max_steps + 1, SAVE_EVERY))
    for step in checkpoints:
        for name in ("adapter_model.safetensors", "adapter_config.json", "trainer_state.pt"):
            assert (run_dir / "checkpoints" / f"step-{step}" / name).is_file()
    assert not list((run_dir / "checkpoints").glob(".tmp-*")), "a half-written checkpoint was left behind"


def test_a_fresh_start_in_a_used_run_directory_drops_the_old_checkpoints(tmp_path, tiny_model_dir, prompts_file):
    """Otherwise a later resume would load the old run's last checkpoint and skip steps of the new one."""
    run_dir = train(tiny_config(tiny_model_dir, prompts_file, max_steps=4), tmp_path / "run", progress=False)
    assert list_checkpoints(run_dir) == [2, 4]
    train(tiny_config(tiny_model_dir, prompts_file, max_steps=1), run_dir, progress=False)
    kept_only_new = list_checkpoints(run_dir) == [1]
    record_fault("fresh start in a used run directory", 1, int(kept_only_new), record_problems(run_dir, through_step=1))
    assert kept_only_new, list_checkpoints(run_dir)
    assert record_problems(run_dir, through_step=1) == 0
