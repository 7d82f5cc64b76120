"""Fault suite, bad input: datasets, configs and models a user can hand the engine, and names
that try to leave their directory. Each is refused with a message that names the problem, or
fails the run with the reason in status.json; nothing else is touched."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import time
import tracemalloc
from pathlib import Path

import pytest
import torch
from fault_log import record_fault
from safetensors.torch import save_file

from rft import data, jobs, models
from rft.__main__ import main as cli_main
from rft.config import ConfigError, DataConfig, ModelConfig, RewardsConfig, RunConfig, SamplingConfig, ScheduleConfig
from rft.export import ExportError, export_for_dashboard
from rft.grpo.trainer import train
from rft.runs import delete_run, effective_state, new_run_id, read_status, run_dir_for

REWARD = "def short(prompt, completion, example):\n    return -len(completion) / 20\n"


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"Say something, number {i}."}) + "\n" for i in range(8)))
    return path


def config_for(model_dir, dataset, **sections) -> RunConfig:
    config = RunConfig(
        name="bad-input",
        model=ModelConfig(name_or_path=str(model_dir)),
        data=DataConfig(preset=None, path=str(dataset)),
        rewards=RewardsConfig(source=REWARD, timeout_s=5.0),
        sampling=SamplingConfig(num_generations=2, max_completion_length=4),
        schedule=ScheduleConfig(max_steps=1, save_every=0),
    )
    for name, value in sections.items():
        setattr(config, name, value)
    return config


def refused_at_launch(config: RunConfig, runs_root: Path) -> list[str]:
    """The problems start_job gives, after checking it started nothing and created no run directory."""
    with pytest.raises(ConfigError) as refused:
        jobs.start_job(config, runs_root)
    assert not [p for p in runs_root.glob("*") if p.is_dir()], "a refused launch left a run directory"
    return refused.value.problems


class PickleBomb:
    """Unpickling this creates `marker`: proof that a file was unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


# ---- datasets ----------------------------------------------------------------------------------

DATASET_FAULTS = {
    "empty file": (b"", "empty"),
    "no prompt column": (b'{"question": "what?"}\n', "no 'prompt' column"),
    "a malformed JSONL line": (b'{"prompt": "fine"}\n{"prompt": "broken\n', "line 2"),
    "non-UTF-8 bytes": (b'{"prompt": "caf\xe9"}\n', "not UTF-8"),
}


@pytest.mark.parametrize("fault", list(DATASET_FAULTS))
def test_a_bad_dataset_is_refused_at_launch_with_what_is_wrong(fault, tmp_path, tiny_model_dir):
    content, expected = DATASET_FAULTS[fault]
    dataset = tmp_path / "data.jsonl"
    dataset.write_bytes(content)
    problems = refused_at_launch(config_for(tiny_model_dir, dataset), tmp_path / "runs")
    named = [p for p in problems if p.startswith("data.path:")]
    record_fault(f"dataset: {fault}", 1, int(len(named) == 1 and expected in named[0]), 0)
    assert len(named) == 1 and expected in named[0], problems


def test_a_dataset_over_the_size_cap_is_refused_without_being_read(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "MAX_DATASET_BYTES", 2**20)
    big = tmp_path / "big.jsonl"
    line = json.dumps({"prompt": "x" * 1000}) + "\n"
    big.write_text(line * 3000)  # 3 MB
    tracemalloc.start()
    with pytest.raises(data.DatasetError) as refused:
        data.read_file(big)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    within_bounds = peak < 256 * 1024
    record_fault("dataset: a very large file", 1, int(within_bounds and "3 MB" in str(refused.value)), 0)
    assert "3 MB" in str(refused.value) and "up to 1 MB" in str(refused.value)
    assert within_bounds, f"refusing the file took {peak} bytes: it was read"


def test_prompts_over_the_limit_are_left_out_and_all_over_fails_the_run(tmp_path, tiny_model_dir):
    dataset = tmp_path / "mixed.jsonl"
    rows = [{"prompt": "Short one."}, {"prompt": "word " * 400}, {"prompt": "Another short one."}]
    dataset.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = config_for(tiny_model_dir, dataset)
    config.data.max_prompt_length = 64
    run_dir = train(config, tmp_path / "mixed-run", progress=False)
    logs = (run_dir / "logs.txt").read_text()
    some_left_out = read_status(run_dir)["state"] == "finished" and "1 prompt(s) over data.max_prompt_length=64" in logs

    dataset.write_text(json.dumps({"prompt": "word " * 400}) + "\n")
    with pytest.raises(data.DatasetError):
        train(config, tmp_path / "long-run", progress=False)
    status = read_status(tmp_path / "long-run")
    all_refused = status["state"] == "failed" and "longer than data.max_prompt_length=64" in status["error"]
    record_fault("dataset: prompts longer than the limit", 2, some_left_out + all_refused, 0)
    assert some_left_out, logs
    assert all_refused, status


# ---- configs -----------------------------------------------------------------------------------

CONFIG_FAULTS = [
    ("sampling.num_generations=1", "sampling.num_generations"),
    ("sampling.num_generations=0", "sampling.num_generations"),
    ("optim.prompts_per_step=1024", "optim.prompts_per_step"),  # 1024 x 64 completions per micro-batch
    ("optim.learning_rate=-0.001", "optim.learning_rate"),
    ("optim.learning_rate=.nan", "optim.learning_rate"),
    ("optim.weight_decay=.inf", "optim.weight_decay"),
    ("grpo.beta=1e30", "grpo.beta"),
    ("sampling.temperature=0", "sampling.temperature"),
    ("sampling.max_completion_length=10000000", "sampling.max_completion_length"),
    ("schedule.max_steps=-5", "schedule.max_steps"),
    ("schedule.seed=-1", "schedule.seed"),
    ("lora.rank=0", "lora.rank"),
    ("data.max_prompt_length=1000000000000", "data.max_prompt_length"),
]


def test_bad_config_values_are_refused_at_launch_with_the_field_named(tmp_path, tiny_model_dir, prompts_file):
    base = config_for(tiny_model_dir, prompts_file, sampling=SamplingConfig(num_generations=64))
    named = 0
    for assignment, field in CONFIG_FAULTS:
        problems = refused_at_launch(base.with_overrides([assignment]), tmp_path / "runs")
        named += any(problem.startswith(field + ":") for problem in problems)
    record_fault("config: negative, absurd or too-small values", len(CONFIG_FAULTS), named, 0)
    assert named == len(CONFIG_FAULTS)


def test_values_that_are_not_numbers_are_refused_when_read(capsys):
    for assignment, field in [("sampling.num_generations=.inf", "sampling.num_generations"),
                              ("sampling.num_generations=many", "sampling.num_generations"),
                              ("optim.learning_rate=[1]", "optim.learning_rate")]:
        assert cli_main(["train", "--preset", "wordle", "--set", assignment]) == 2
        assert f"- {field}: expected a number" in capsys.readouterr().err


def test_the_batch_is_whole_groups_so_no_size_can_split_one(tiny_model_dir, prompts_file):
    """There is no separate batch size: a micro-batch is prompts_per_step groups of num_generations."""
    config = config_for(tiny_model_dir, prompts_file).with_overrides(
        ["sampling.num_generations=3", "optim.prompts_per_step=5", "optim.gradient_accumulation_steps=2"])
    assert config.problems() == []
    assert config.completions_per_step == 5 * 3 * 2


# ---- models ------------------------------------------------------------------------------------

def copy_tokenizer(model_dir: Path, target: Path) -> Path:
    target.mkdir()
    for path in model_dir.iterdir():
        if path.name.startswith(("tokenizer", "special_tokens")) or path.name == "chat_template.jinja":
            shutil.copy(path, target / path.name)
    return target


def model_config(model_dir: Path, **changes) -> dict:
    return {**json.loads((model_dir / "config.json").read_text()), **changes}


def failed_run(config: RunConfig, run_dir: Path) -> str:
    """The error a run that cannot start shows; the calling process goes on."""
    with pytest.raises(models.ModelLoadError):
        train(config, run_dir, progress=False)
    status = read_status(run_dir)
    assert status["state"] == "failed", status
    return status["error"]


def test_a_missing_path_or_a_directory_that_is_not_a_model_is_refused_or_fails_the_run(
        tmp_path, prompts_file):
    missing = tmp_path / "no-such-model"
    empty = tmp_path / "empty"
    empty.mkdir()
    refusals = [refused_at_launch(config_for(path, prompts_file), tmp_path / "runs") for path in (missing, empty)]
    refused = ("does not exist" in " ".join(refusals[0]), "not a model directory" in " ".join(refusals[1]))
    errors = [failed_run(config_for(path, prompts_file), tmp_path / f"run-{path.name}") for path in (missing, empty)]
    reasons = ("no such file or directory" in errors[0], "not a model" in errors[1])
    record_fault("model: path does not exist", 2, refused[0] + reasons[0], 0)
    record_fault("model: directory is not a model", 2, refused[1] + reasons[1], 0)
    assert all(refused), refusals
    assert all(reasons), errors


def test_an_unsupported_architecture_fails_the_job_with_the_reason(tmp_path, tiny_model_dir, prompts_file):
    model = copy_tokenizer(tiny_model_dir, tmp_path / "quantum")
    (model / "config.json").write_text(json.dumps(model_config(tiny_model_dir, model_type="quantum_llm",
                                                               architectures=["QuantumForCausalLM"])))
    shutil.copy(tiny_model_dir / "model.safetensors", model / "model.safetensors")
    runs_root = tmp_path / "runs"
    run_dir = jobs.start_job(config_for(model, prompts_file), runs_root)
    deadline = time.time() + 180
    while effective_state(read_status(run_dir)) != "failed" and time.time() < deadline:
        time.sleep(0.5)
    status = read_status(run_dir)
    reason_shown = status.get("state") == "failed" and "quantum_llm" in (status.get("error") or "")
    record_fault("model: unsupported architecture", 1, int(reason_shown and not jobs.active_jobs(runs_root)), 0)
    assert reason_shown, status
    assert not jobs.active_jobs(runs_root), "a failed job still blocks the next launch"


def test_a_model_too_large_for_memory_fails_the_run_as_out_of_memory(tmp_path, tiny_model_dir, prompts_file):
    model = copy_tokenizer(tiny_model_dir, tmp_path / "huge")
    # 2e9 x 8192 fp32 embeddings: 64 TB, refused by the allocator at once, never touched. The
    # weights file holds none of the model's tensors, so loading must allocate them all.
    (model / "config.json").write_text(json.dumps(model_config(tiny_model_dir, vocab_size=2_000_000_000, hidden_size=8192,
                                                               num_attention_heads=64, num_key_value_heads=64)))
    save_file({"unrelated": torch.zeros(1)}, model / "model.safetensors")
    error = failed_run(config_for(model, prompts_file), tmp_path / "run")
    record_fault("model: out of memory", 1, int("not enough CPU memory" in error), 0)
    assert "not enough CPU memory" in error and str(model) in error


# ---- safetensors only: no pickle from user-supplied files --------------------------------------

def test_pickled_model_weights_are_never_loaded(tmp_path, tiny_model_dir, prompts_file):
    marker = tmp_path / "pickle-ran"
    model = copy_tokenizer(tiny_model_dir, tmp_path / "pickled")
    shutil.copy(tiny_model_dir / "config.json", model / "config.json")
    (model / "pytorch_model.bin").write_bytes(pickle.dumps(PickleBomb(marker), protocol=2))

    problems = refused_at_launch(config_for(model, prompts_file), tmp_path / "runs")
    with pytest.raises(models.ModelLoadError, match="cannot load this model"):
        models.load_base_model(ModelConfig(name_or_path=str(model)))
    assert any("no .safetensors weights" in p for p in problems), problems
    assert not marker.exists(), "a pickle from the model directory was executed"


def test_pickled_adapters_are_never_loaded(tmp_path, tiny_model_dir, prompts_file):
    marker = tmp_path / "pickle-ran"
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "target_modules": ["q_proj"]}))
    (adapter / "adapter_model.bin").write_bytes(pickle.dumps(PickleBomb(marker), protocol=2))

    config = config_for(tiny_model_dir, prompts_file, model=ModelConfig(name_or_path=str(tiny_model_dir),
                                                                        adapter=str(adapter)))
    problems = refused_at_launch(config, tmp_path / "runs")
    with pytest.raises(models.ModelLoadError, match="only safetensors"):
        models.load_for_inference(str(tiny_model_dir), adapter=str(adapter))
    assert any(p.startswith("model.adapter:") and "safetensors" in p for p in problems), problems
    assert not marker.exists(), "a pickle from the adapter directory was executed"


def test_a_tampered_trainer_state_is_refused_on_resume_without_running_it(tmp_path, tiny_model_dir, prompts_file):
    marker = tmp_path / "pickle-ran"
    config = config_for(tiny_model_dir, prompts_file)
    run_dir = train(config, tmp_path / "run", progress=False)
    (run_dir / "checkpoints" / "step-1" / "trainer_state.pt").write_bytes(pickle.dumps(PickleBomb(marker), protocol=2))
    (run_dir / "status.json").unlink()  # a run that did not finish, so resume loads the checkpoint

    with pytest.raises(Exception, match="[Ww]eights only load failed"):
        train(config, run_dir, resume=True, progress=False)
    assert read_status(run_dir)["state"] == "failed"
    assert not marker.exists(), "the checkpoint's pickle was executed"


# ---- names that try to leave their directory ---------------------------------------------------

ESCAPING_NAMES = ["..", ".", "../outside", "a/../../outside", "/etc", "x/y", "name\n", "", ".hidden", "a\x00b"]


def test_run_ids_cannot_lead_a_run_or_an_export_outside_the_runs_root(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "config.yaml").write_text(RunConfig().to_yaml())
    (root / "link").symlink_to(tmp_path / "elsewhere")
    refused = 0
    for name in ESCAPING_NAMES + ["link"]:
        try:
            run_dir_for(root, name)
        except ValueError:
            refused += 1
        try:
            export_for_dashboard(root, name)
        except ExportError as exc:
            refused += "not a valid run id" in str(exc) or "leads outside" in str(exc)
    tried = 2 * (len(ESCAPING_NAMES) + 1)
    record_fault("path traversal: run ids (runs and exports)", tried, refused, 0)
    assert refused == tried
    assert run_dir_for(root, "20250101-run") == root / "20250101-run"
    assert not (tmp_path / "exports").exists() and not list((tmp_path / "elsewhere").glob("*step*"))


def test_any_run_name_becomes_a_run_directory_inside_the_runs_root(tmp_path):
    root = tmp_path / "runs"
    for name in ["../../etc/passwd", "/abs/path", "..", "a\\b", "naïve run ✓", "\x00", " " * 5]:
        run_dir = run_dir_for(root, new_run_id(name))
        assert run_dir.parent == root.resolve(), (name, run_dir)


def test_delete_run_only_deletes_run_directories(tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("years of work")
    with pytest.raises(ValueError, match="not a run directory"):
        delete_run(precious)
    record_fault("delete: a directory that is not a run", 1, int((precious / "thesis.txt").exists()), 0)
    assert (precious / "thesis.txt").exists()


def test_a_recycled_pid_is_not_taken_for_the_trainer_nor_killed(tmp_path):
    """A dead trainer's pid, reused by another program, must not show as running or be killed."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(RunConfig().to_yaml())
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        status = {"state": "running", "pid": stranger.pid, "step": 3, "updated_at": time.time() - 3600}
        (run_dir / "status.json").write_text(json.dumps(status))
        assert effective_state(read_status(run_dir)) == "failed"
        with pytest.raises(jobs.JobError, match="not running"):
            jobs.stop_job(run_dir)
        jobs.kill_job(run_dir)
        time.sleep(0.2)
        alive = stranger.poll() is None
        record_fault("stale pid in status.json (pid reused)", 1, int(alive), 0)
        assert alive, "kill_job killed a process that was not the trainer"
    finally:
        stranger.kill()
        stranger.wait()
    assert os.path.exists(run_dir / "config.yaml")
