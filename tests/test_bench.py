"""The benchmark (bench/): its figures, its configuration of our trainer, and both trainers on a tiny model."""

from __future__ import annotations

import re

import pytest
import torch

from bench import report
from bench.workload import Workload


def steps(*step_seconds: float, generate: float = 1.0, score: float = 0.5, tokens: int = 100) -> list[dict]:
    return [{"step_s": s, "generate_s": generate, "score_s": score, "completion_tokens": tokens} for s in step_seconds]


def result(name: str, step_list: list[dict], peak_mb: float) -> dict:
    return {"trainer": name, "version": "1", "steps": step_list, "peak_memory_mb": peak_mb,
            "other_processes_cpu_cores": 0.0}


def test_summary_leaves_out_the_warmup_and_splits_the_step():
    summary = report.summarise(result("t", steps(100.0, 4.0, 6.0, 5.0), 1000.0), warmup_steps=1)
    assert summary["measured_steps"] == 3
    assert summary["median_step_s"] == 5.0
    assert summary["completion_tokens_per_s"] == pytest.approx(300 / 15.0)
    assert summary["train_s"] == pytest.approx(5.0 - 1.0 - 0.5)
    assert summary["generation_tokens_per_s"] == pytest.approx(300 / 3.0)  # tokens / seconds spent generating


def test_summary_refuses_a_run_with_only_warmup_steps():
    with pytest.raises(ValueError, match="none after the warm-up"):
        report.summarise(result("t", steps(3.0), 1.0), warmup_steps=1)


def test_ratios_compare_ours_with_trl():
    trl = report.summarise(result("trl", steps(10.0, 10.0), 2000.0), warmup_steps=0)
    ours = report.summarise(result("ours", steps(4.0, 4.0), 500.0), warmup_steps=0)
    ratios = report.ratios(trl, ours)
    assert ratios["speedup"] == pytest.approx(2.5)
    assert ratios["throughput_ratio"] == pytest.approx(2.5)
    assert ratios["memory_ratio"] == pytest.approx(0.25)


def comparison(workload: Workload, trl_entry: dict, ours_entry: dict) -> dict:
    entry = {"workload": workload.to_dict(), "trl": trl_entry, "ours": ours_entry}
    if "summary" in trl_entry and "summary" in ours_entry:
        entry["ratios"] = report.ratios(trl_entry["summary"], ours_entry["summary"])
    return entry


def summarised(name: str, seconds: float, peak_mb: float) -> dict:
    entry = result(name, steps(seconds, seconds), peak_mb)
    return {**entry, "summary": report.summarise(entry, warmup_steps=1)}


def record(comparisons: list[dict]) -> dict:
    return {"created": "2026-01-01T00:00:00+00:00", "command": "python -m bench.run",
            "machine": {"cpu": "Test CPU", "cores": 2, "memory_gb": 8.0, "device": "cpu", "torch_threads": 2},
            "load_average_before": (0.1, 0.2, 0.3), "comparisons": comparisons}


def test_markdown_shows_both_trainers_and_the_ratios():
    text = report.markdown(record([comparison(Workload(), summarised("TRL", 10.0, 900.0), summarised("rft", 4.0, 300.0))]))
    assert "| TRL 1 | 10.0 |" in text and "| rft 1 | 4.0 |" in text
    assert "Speedup (TRL step time / ours): 2.50x" in text
    assert "peak-memory ratio (ours / TRL): 0.33" in text
    assert "Test CPU (2 cores" in text


def test_scaling_markdown_has_a_row_per_workload_and_names_a_failure():
    ok = comparison(Workload(num_generations=4), summarised("TRL", 6.0, 900.0), summarised("rft", 3.0, 300.0))
    failed = comparison(Workload(num_generations=16, completion_length=256),
                        {"trainer": "TRL GRPOTrainer", "failed": "out of memory (stopped at 20.0 GB)"},
                        summarised("rft", 30.0, 800.0))
    text = report.markdown(record([ok, failed]))
    assert "| 4 | 64 | 6.0 | 3.0 | 2.00x |" in text
    assert "| 16 | 256 | out of memory (stopped at 20.0 GB) | 30.0 |" in text


def test_generation_speed_is_shown_as_a_share_of_each_matmul_bound():
    entry = comparison(Workload(), summarised("TRL", 10.0, 900.0), summarised("rft", 4.0, 300.0))
    entry["generation_flops_per_token"] = 0.5e9
    with_bounds = record([entry])
    with_bounds["machine"]["matmul_bound_gflops"] = {"fp32": 100.0, "bf16": 400.0}
    text = report.markdown(with_bounds)
    # 100 completion tokens in 1 s of generation, 0.5 GFLOP each: 50 GFLOP/s
    assert "| 100 tok/s (50% of fp32, 12% of bf16) |" in text
    assert "fp32 100 GFLOP/s, bf16 400 GFLOP/s" in text
    assert "| 100 tok/s |" in report.markdown(record([entry | {"generation_flops_per_token": None}]))
    scaling = report.markdown(with_bounds | {"comparisons": [entry, entry]})
    assert scaling.count("100 tok/s (50% of fp32, 12% of bf16)") == 4


def test_a_generated_tokens_arithmetic_counts_every_linear_layer_and_the_attention(tiny_model_dir):
    from bench.run import generation_flops_per_token
    from rft.models import load_base_model
    from rft.config import ModelConfig

    workload = Workload(completion_length=64, model=str(tiny_model_dir))
    model = load_base_model(ModelConfig(name_or_path=str(tiny_model_dir)))
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    flops = generation_flops_per_token(workload)
    config = model.config
    per_context_token = 2 * 2 * config.num_hidden_layers * config.num_attention_heads * config.head_dim
    assert (flops - 2 * linear) % per_context_token == 0
    assert (flops - 2 * linear) // per_context_token > 32  # the prompt and half the completion


def test_our_trainer_is_configured_as_the_workload_says():
    from bench.run_ours import ours_config

    workload = Workload(num_generations=4, completion_length=32, steps=3, warmup_steps=1)
    config = ours_config(workload)
    assert (config.sampling.num_generations, config.sampling.max_completion_length) == (4, 32)
    assert (config.lora.rank, config.lora.alpha, config.lora.target_modules) == (16, 32, "all-linear")
    assert (config.grpo.beta, config.grpo.loss_type, config.grpo.num_iterations) == (0.04, "grpo", 1)
    assert config.grpo.use_bias_correction_kl  # as TRL 1.16's GRPOConfig defaults it
    assert (config.optim.learning_rate, config.optim.prompts_per_step) == (5e-5, 1)
    assert config.schedule.max_steps == 4 and config.schedule.seed == 0
    assert not config.data.shuffle and config.data.limit == 4  # the dataset's first rows, in order
    assert not config.sft.enabled and not config.model.gradient_checkpointing
    assert config.model.dtype != "auto"  # named, as TRL's is: "auto" would add bf16 autocast on some CPUs


@pytest.mark.slow
def test_our_trainer_reports_every_step_on_a_tiny_model(tiny_model_dir):
    # TRL's side runs only under `make bench`, which installs it (requirements-bench.txt).
    from bench.run_ours import run

    workload = Workload(num_generations=2, completion_length=4, steps=1, warmup_steps=1, model=str(tiny_model_dir))
    outcome = run(workload)
    assert len(outcome["steps"]) == 2
    for step in outcome["steps"]:
        assert step["step_s"] >= step["generate_s"] + step["score_s"] > 0
        assert 2 <= step["completion_tokens"] <= 2 * 4  # at least one token (EOS) per completion


def test_every_loss_variant_matches_trls_compute_loss():
    # Runs where `make bench` / `make crosscheck` installed TRL (requirements-bench.txt).
    pytest.importorskip("trl")
    from bench.crosscheck_trl import TOLERANCE, VARIANTS, crosscheck

    rows = crosscheck(seeds=(0,))
    assert [row["variant"] for row in rows] == list(VARIANTS)
    for row in rows:
        assert row["loss_diff"] <= TOLERANCE and row["grad_diff"] <= TOLERANCE, row


def test_the_trl_reference_refuses_what_trl_cannot_reproduce_and_draws_our_prompts_in_order(tmp_path, tiny_model_dir):
    from bench import trl_reference
    from rft.grpo.trainer import Trainer
    from rft.models import load_tokenizer
    from rft.presets import preset_config

    config = preset_config("arithmetic")
    refused = " ".join(trl_reference.unsupported(config))
    for setting in ("dynamic_sampling", "KL term after a warm start", "sft.enabled"):
        assert setting in refused
    config = config.with_overrides([f"model.name_or_path={tiny_model_dir}", "model.adapter=somewhere", "grpo.beta=0",
                                    "grpo.dynamic_sampling=false", "schedule.max_steps=3",
                                    "optim.gradient_accumulation_steps=2", "optim.prompts_per_step=2"])
    config.sft.enabled = False
    assert trl_reference.unsupported(config) == []

    rows = trl_reference.prompt_rows(config, tmp_path / "reference")
    (tmp_path / "ours").mkdir()
    ours = Trainer(config, tmp_path / "ours")
    ours.tokenizer = load_tokenizer(str(tiny_model_dir))
    ours.prompts = ours._prepare_prompts()
    expected = [record for step in (1, 2, 3) for micro in (0, 1) for record in ours.prompts_for(step, micro)]
    assert len(rows) == 12
    assert [row["prompt"] for row in rows] == [record.text for record in expected]
    assert [row["answer"] for row in rows] == [record.example["answer"] for record in expected]


def test_the_trl_reference_calls_both_kinds_of_reward_function_as_trl_does():
    from bench import trl_reference
    from rft.presets import preset_config

    config = preset_config("arithmetic")
    config.rewards.source = (
        "def exact(prompt, completion, example):\n    return float(completion == example['answer'])\n\n"
        "def short(prompts, completions, completion_ids):\n    return [-len(ids) for ids in completion_ids]\n")
    config.rewards.weights = {"short": 0.5}
    functions, weights = trl_reference.reward_functions(config.rewards.source, config.rewards.weights,
                                                        columns=["answer"])
    trl_keywords = {"completion_ids": [[1, 2], [3]], "answer": ["4", "5"], "trainer_state": object()}
    assert [f.__name__ for f in functions] == ["exact", "short"]
    assert weights == [1.0, 0.5]
    assert functions[0](["p", "p"], ["4", "6"], **trl_keywords) == [1.0, 0.0]
    assert functions[1](["p", "p"], ["4", "6"], **trl_keywords) == [-2, -1]


@pytest.mark.slow
def test_the_gpu_measurement_builds_the_bundled_architecture_with_random_weights(tmp_path, bundled_model_dir):
    """bench/gpu.sh cannot carry the bundled weights (98 MB) to a GPU machine: it carries the config and
    tokenizer and builds the same shapes there."""
    from safetensors import safe_open

    from bench.gpu import copy_model_files, random_model
    from rft.models import load_tokenizer

    copy_model_files(bundled_model_dir, tmp_path / "carried")  # what `prepare` writes to .gpu/model
    built = random_model(tmp_path / "carried", tmp_path / "random")

    def tensors(folder):
        with safe_open(str(folder / "model.safetensors"), "pt") as f:
            return {key: f.get_tensor(key) for key in f.keys()}

    bundled, random = tensors(bundled_model_dir), tensors(built)
    assert {key: value.shape for key, value in random.items()} == {key: value.shape for key, value in bundled.items()}
    assert all(value.dtype == torch.bfloat16 for value in random.values())
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.allclose(random[name].float(), bundled[name].float(), atol=1e-3)
    message = [{"role": "user", "content": "Guess the word."}]
    assert load_tokenizer(str(built)).apply_chat_template(message, tokenize=False) == \
        load_tokenizer(str(bundled_model_dir)).apply_chat_template(message, tokenize=False)


@pytest.mark.slow
def test_the_generation_benchmark_prints_a_row_per_batch_size(tiny_model_dir, capsys):
    from bench.generation import main

    main(["--model", str(tiny_model_dir), "--device", "cpu", "--rows", "2", "3", "--tokens", "4", "--repeats", "1"])
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert [line.split(" | ")[0] for line in table] == ["| rows", "| 2", "| 3"]
    # each of our precisions: its speed-up over generate(), its share of the matmul bound and of the bandwidth
    assert all(re.search(r"\| \d+\.\d\dx, \d+%, \d+% \|$", row) for row in table[1:])


def test_the_training_pass_benchmark_prints_a_row_per_way(tiny_model_dir, capsys):
    from bench.training_pass import main
    from rft import lm_head
    from rft.grpo import sampler

    rows_per_pass, final_states = sampler.ROWS_PER_PASS, lm_head.final_states
    main(["--repeats", "1", "--set", f"model.name_or_path={tiny_model_dir}", "--set", "sampling.num_generations=3",
          "--set", "sampling.max_completion_length=6", "--set", "grpo.dynamic_sampling=false"])
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert [line.split(" | ")[0] for line in table] == [
        "| way", "| one pass, autograd head", "| one pass, fused head", f"| passes of {rows_per_pass}, fused head"]
    assert all(re.search(r"( \| \d+\.\d\d){3} \| \d+% \|$", row) for row in table[1:])
    assert (sampler.ROWS_PER_PASS, lm_head.final_states) == (rows_per_pass, final_states)  # put back as they were
