"""The SFT warm start: its loss, its run-directory files, and GRPO continuing from its adapter."""

import json

import pytest
import torch

from rft import models
from rft.tasks.arithmetic import reward_source
from rft.config import DataConfig, ModelConfig, OptimConfig, RewardsConfig, RunConfig, SamplingConfig, ScheduleConfig
from rft.tasks.arithmetic.problems import demonstration_for_row
from rft.data import DatasetError, load_rows
from rft.grpo.trainer import Trainer, train
from rft.runs import RunWriter, list_checkpoints, read_metrics, read_sft_metrics, read_status, sft_adapter_path
from rft.sft import batch_loss, batch_order, build_examples, collate, demonstration_source


def arithmetic_config(model_dir, **sft) -> RunConfig:
    config = RunConfig(
        name="tiny-sft",
        model=ModelConfig(name_or_path=str(model_dir)),
        data=DataConfig(preset="arithmetic", limit=16),
        rewards=RewardsConfig(source=reward_source(), timeout_s=2.0),
        sampling=SamplingConfig(num_generations=4, max_completion_length=8, top_k=10),
        optim=OptimConfig(learning_rate=1e-3),
        schedule=ScheduleConfig(max_steps=2, save_every=1),
    )
    settings = {"enabled": True, "examples": 16, "epochs": 4.0, "learning_rate": 1e-2, "batch_size": 4, **sft}
    return config.with_overrides([f"sft.{key}={value}" for key, value in settings.items()])


def test_the_shared_prefix_loss_equals_the_plain_loss(tiny_model_dir, tmp_path):
    config = arithmetic_config(tiny_model_dir)
    tokenizer = models.load_tokenizer(str(tiny_model_dir))
    examples = build_examples(config, tokenizer, RunWriter(tmp_path))[:4]
    model = models.wrap_with_lora(models.load_base_model(config.model), config.lora)
    with torch.no_grad():
        # A LoRA B matrix starts at zero; moving it makes the check cover the adapter too.
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.normal_(0, 0.05)
        shared, tokens = batch_loss(model, examples, tokenizer.pad_token_id)
        plain = model(**collate(examples, tokenizer.pad_token_id)).loss
    assert shared.item() == pytest.approx(plain.item(), rel=1e-4)
    assert tokens == sum(len(e.input_ids) - e.prompt_length for e in examples)
    with torch.no_grad(), models.training_autocast(torch.device("cpu")):
        mixed, _ = batch_loss(model, examples, tokenizer.pad_token_id)
    assert mixed.dtype == torch.float32 and mixed.item() == pytest.approx(plain.item(), rel=2e-2)


def test_bf16_autocast_only_for_the_auto_dtype_on_a_cpu_with_native_bf16():
    cpu = torch.device("cpu")
    with models.training_autocast(cpu, "auto"):
        assert torch.is_autocast_enabled("cpu") == models.cpu_has_native_bf16()
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
    with models.training_autocast(cpu, "float32"):
        assert not torch.is_autocast_enabled("cpu")
    with models.training_autocast(torch.device("cuda"), "auto"):  # a GPU model is loaded in bf16 already
        assert not torch.is_autocast_enabled("cpu")


def test_only_demonstration_tokens_are_labelled(tiny_model_dir, tmp_path):
    config = arithmetic_config(tiny_model_dir)
    tokenizer = models.load_tokenizer(str(tiny_model_dir))
    example = build_examples(config, tokenizer, RunWriter(tmp_path))[0]
    labels = collate([example], tokenizer.pad_token_id)["labels"][0]
    labelled = [token for token in labels.tolist() if token != -100]
    assert labelled == example.input_ids[example.prompt_length:]
    assert labelled[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(labelled[:-1]) == demonstration_for_row(load_rows(config.data)[0])


def test_batches_cover_every_example_once_per_epoch():
    order = batch_order(count=6, batch_size=4, steps=3, seed=0)
    assert [len(batch) for batch in order] == [4, 4, 4]
    flat = [index for batch in order for index in batch]
    assert sorted(flat[:6]) == list(range(6)) and sorted(flat[6:]) == sorted(set(flat[6:]))
    assert order == batch_order(count=6, batch_size=4, steps=3, seed=0)


def test_a_dataset_file_needs_a_completion_column(tmp_path):
    data = DataConfig(preset=None, path=str(tmp_path / "rows.jsonl"))
    with pytest.raises(DatasetError, match="completion"):
        demonstration_source(data, [{"prompt": "hi"}])
    demonstrate = demonstration_source(data, [{"prompt": "hi", "completion": " hello"}])
    assert demonstrate({"prompt": "hi", "completion": " hello"}, None) == " hello"
    with pytest.raises(DatasetError, match="no demonstrations"):
        demonstration_source(DataConfig(preset="unknown"), [])


def test_sft_then_grpo_from_the_warm_started_adapter(tmp_path, tiny_model_dir):
    run_dir = train(arithmetic_config(tiny_model_dir), tmp_path / "run", progress=False)

    assert read_status(run_dir)["state"] == "finished"
    sft_rows = read_sft_metrics(run_dir)
    assert sft_rows["step"].tolist() == list(range(1, 17))  # 4 epochs of 16 examples, 4 at a time
    for key in ("loss", "learning_rate", "tokens", "time/step", "epoch"):
        assert key in sft_rows
    losses = sft_rows["loss"].tolist()
    assert sum(losses[-4:]) / 4 < 0.7 * sum(losses[:4]) / 4, losses

    adapter = sft_adapter_path(run_dir)
    assert adapter == run_dir / "checkpoints" / "sft"
    assert (adapter / "adapter_config.json").exists()
    assert list_checkpoints(run_dir) == [1, 2]  # the warm start is not a GRPO step

    metrics = read_metrics(run_dir)
    assert metrics["step"].tolist() == [1, 2]
    # The reference is the warm-started adapter, so the policy starts exactly on it.
    assert metrics.loc[1, "kl"] == pytest.approx(0.0, abs=1e-6)
    logs = (run_dir / "logs.txt").read_text()
    assert "sft: 16 demonstrations" in logs and "sft: warm start saved to checkpoints/sft" in logs


def test_the_warm_start_is_not_learned_from_the_base_model_again_on_resume(tmp_path, tiny_model_dir):
    config = arithmetic_config(tiny_model_dir, epochs=1.0)
    run_dir = train(config, tmp_path / "run", progress=False)
    sft_file = run_dir / "sft_metrics.jsonl"
    before = sft_file.read_text()
    adapter_bytes = (run_dir / "checkpoints" / "sft" / "adapter_model.safetensors").read_bytes()

    longer = config.with_overrides(["schedule.max_steps=3"])
    Trainer(longer, run_dir).run(resume=True, progress=False)

    assert read_metrics(run_dir)["step"].tolist() == [1, 2, 3]
    assert sft_file.read_text() == before
    assert (run_dir / "checkpoints" / "sft" / "adapter_model.safetensors").read_bytes() == adapter_bytes
    assert "sft: continuing from the warm start in checkpoints/sft" in (run_dir / "logs.txt").read_text()


def test_a_fresh_start_in_the_same_directory_learns_a_new_warm_start(tmp_path, tiny_model_dir):
    config = arithmetic_config(tiny_model_dir, epochs=1.0)
    run_dir = train(config, tmp_path / "run", progress=False)
    (run_dir / "sft_metrics.jsonl").write_text(json.dumps({"step": 99, "loss": 0.0}) + "\n")
    train(config.with_overrides(["sft.epochs=0.5"]), run_dir, progress=False)
    assert read_sft_metrics(run_dir)["step"].tolist() == [1, 2]


def test_sft_fields_are_validated_only_when_enabled():
    config = RunConfig(rewards=RewardsConfig(source="def r(prompt, completion, example):\n    return 1.0\n"))
    broken = config.with_overrides(["sft.examples=0", "sft.epochs=0", "sft.learning_rate=2", "sft.batch_size=0",
                                    "sft.max_length=4"])
    assert broken.problems() == []
    problems = broken.with_overrides(["sft.enabled=true"]).problems()
    assert problems == [
        "sft.examples: must be in [1, 1000000] demonstrations",
        "sft.epochs: must be in (0, 100]",
        "sft.learning_rate: must be in (0, 1]",
        "sft.batch_size: must be in [1, 1024]",
        "sft.max_length: must be in [16, 131072] tokens",
    ]
    assert RunConfig.from_yaml(config.to_yaml()).sft == config.sft
