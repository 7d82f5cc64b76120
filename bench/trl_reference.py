"""A reference run: this project's GRPO recipe trained by TRL's GRPOTrainer instead of its own trainer.

    python -m bench.trl_reference --preset arithmetic --run-dir runs/trl-ref --no-sft \\
        --set model.adapter=runs/arith-sft/checkpoints/sft --set grpo.beta=0 --set grpo.dynamic_sampling=false

When a recipe fails to improve a model, this says whether the trainer or the recipe is the cause:
TRL 1.16's GRPOTrainer (requirements-bench.txt) trains on the same config as `python -m rft
train` would, and its checkpoints are scored by the same evaluator (`python -m rft eval TASK
--adapter RUN_DIR/checkpoints/step-N`). What is the same:
- the prompts, in the order this project's trainer draws them (its own `prompts_for`), rendered
  by the same chat template; the reward functions and their weights, run in this process;
- the model and its warm-start adapter, trained in place (the same LoRA layers);
- group size, completion length, temperature, top-p / top-k, loss type, clipping, beta, reward
  scaling, learning rate and its schedule, weight decay, gradient clipping, micro-batches, seed.
What TRL has no counterpart for is refused: dynamic sampling, environments, multi-objective
aggregation other than summing, and a KL term after a warm start (TRL's reference model would be
the base model, where this project's is the warm start). TRL samples with transformers'
generate() in the model's dtype, where this project's trainer samples with its own decode loop
(in bf16 on a CPU with native bf16 matmuls); both compute the loss in the model's dtype.
The checkpoints are saved every schedule.save_every steps as RUN_DIR/checkpoints/step-N (PEFT's
adapter layout), and TRL's per-step log as RUN_DIR/trl_log.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transformers import TrainerCallback  # noqa: E402

from rft import models  # noqa: E402
from rft.config import RunConfig  # noqa: E402
from rft.grpo.trainer import Trainer  # noqa: E402
from rft.presets import preset_config  # noqa: E402
from rft.rewards.analysis import PER_SAMPLE, analyse_source  # noqa: E402


def unsupported(config: RunConfig) -> list[str]:
    """The settings of `config` TRL's GRPOTrainer cannot reproduce."""
    reasons = []
    if config.grpo.dynamic_sampling:
        reasons.append("grpo.dynamic_sampling (TRL has no dynamic sampling): --set grpo.dynamic_sampling=false")
    if config.environment.source:
        reasons.append("an environment (multi-turn episodes)")
    if config.grpo.multi_objective_aggregation != "sum_then_normalize":
        reasons.append("grpo.multi_objective_aggregation other than sum_then_normalize")
    if config.grpo.beta and (config.model.adapter or config.sft.enabled):
        reasons.append("a KL term after a warm start (TRL's reference would be the base model): --set grpo.beta=0")
    if config.sft.enabled:
        reasons.append("sft.enabled: make the warm start with `python -m rft train`, then pass its adapter "
                       "(--no-sft --set model.adapter=RUN/checkpoints/sft)")
    return reasons


def prompt_rows(config: RunConfig, run_dir: Path) -> list[dict]:
    """Every prompt the run's steps draw, in order, with its example's columns: what this project's
    trainer would sample for step 1, micro-batch 0, then 1, ..., then step 2 (its log goes to run_dir)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    ours = Trainer(config, run_dir)
    ours.tokenizer = models.load_tokenizer(config.model.name_or_path)
    ours.prompts = ours._prepare_prompts()
    rows = []
    for step in range(1, config.schedule.max_steps + 1):
        for micro in range(config.optim.gradient_accumulation_steps):
            rows += [{"prompt": record.text, **record.example} for record in ours.prompts_for(step, micro)]
    return rows


def reward_functions(source: str, weights: dict[str, float], columns: list[str]) -> tuple[list, list[float]]:
    """The reward code's functions in TRL's batched signature `f(prompts, completions, **columns)`,
    and their weights: per-sample ones `f(prompt, completion, example)` wrapped (their example
    holds `columns`), batched ones given only the keywords they name (as this project's reward
    runtime does, unless they take **kwargs). They run in this process, as a TRL user's do."""
    namespace: dict = {}
    exec(compile(source, "<rewards>", "exec"), namespace)
    functions = analyse_source(source).functions

    def per_sample(function):
        def score_batch(prompts, completions, **kwargs):
            examples = [dict(zip(columns, values)) for values in zip(*(kwargs[c] for c in columns))]
            return [float(function(p, c, e)) for p, c, e in zip(prompts, completions, examples, strict=True)]

        return score_batch

    def batched(function, info):
        def score_batch(prompts, completions, **kwargs):
            arguments = {"prompts": prompts, "completions": completions, **kwargs}
            if not info.takes_any_keyword:
                arguments = {name: value for name, value in arguments.items() if name in info.parameters}
            return function(**arguments)

        return score_batch

    wrapped = []
    for info in functions:
        function = namespace[info.name]
        score_batch = per_sample(function) if info.convention == PER_SAMPLE else batched(function, info)
        score_batch.__name__ = info.name  # TRL names its reward metrics after it
        wrapped.append(score_batch)
    return wrapped, [float(weights.get(info.name, 1.0)) for info in functions]


class CheckpointsAsSteps(TrainerCallback):
    """TRL's checkpoint-N folders renamed to this project's checkpoints/step-N, adapter files only."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir

    def on_save(self, args, state, control, **kwargs):
        saved = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        target = self.run_dir / "checkpoints" / f"step-{state.global_step}"
        target.mkdir(parents=True, exist_ok=True)
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            shutil.copy2(saved / name, target / name)
        shutil.rmtree(saved)


class LogLines(TrainerCallback):
    def __init__(self, path: Path):
        self.path = path
        self.started = time.perf_counter()

    def on_log(self, args, state, control, logs=None, **kwargs):
        row = {"step": state.global_step, "elapsed_s": round(time.perf_counter() - self.started, 1), **(logs or {})}
        with self.path.open("a") as log:
            log.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


def train(config: RunConfig, run_dir: Path) -> None:
    import trl  # requirements-bench.txt; imported here so that the rest of this module needs only requirements.txt
    from datasets import Dataset
    from peft import PeftModel
    from trl import GRPOConfig, GRPOTrainer

    problems = unsupported(config)
    if problems:
        raise SystemExit("TRL cannot reproduce this config: " + "; ".join(problems))
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(config.to_yaml())
    rows = prompt_rows(config, run_dir)
    columns = [name for name in rows[0] if name != "prompt"]
    functions, weights = reward_functions(config.rewards.source, config.rewards.weights, columns)

    base = models.load_base_model(config.model)
    policy = PeftModel.from_pretrained(base, str(models.checked_adapter_dir(config.model.adapter)), is_trainable=True)
    sampling, grpo, optim = config.sampling, config.grpo, config.optim
    args = GRPOConfig(
        output_dir=str(run_dir / "trl"),
        max_steps=config.schedule.max_steps,
        per_device_train_batch_size=optim.prompts_per_step * sampling.num_generations,
        gradient_accumulation_steps=optim.gradient_accumulation_steps,
        num_generations=sampling.num_generations,
        max_completion_length=sampling.max_completion_length,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        top_k=sampling.top_k,
        beta=grpo.beta,
        use_bias_correction_kl=grpo.use_bias_correction_kl,
        epsilon=grpo.epsilon_low,
        epsilon_high=grpo.epsilon_high if grpo.epsilon_high is not None else grpo.epsilon_low,
        loss_type=grpo.loss_type,
        num_iterations=grpo.num_iterations,
        scale_rewards=grpo.scale_rewards,
        mask_truncated_completions=grpo.mask_truncated_completions,
        reward_weights=weights,
        learning_rate=optim.learning_rate,
        lr_scheduler_type=optim.lr_scheduler,
        warmup_steps=optim.warmup_steps,
        weight_decay=optim.weight_decay,
        max_grad_norm=optim.max_grad_norm,
        seed=config.schedule.seed,
        shuffle_dataset=False,
        gradient_checkpointing=False,
        bf16=False,
        fp16=False,
        use_cpu=next(base.parameters()).device.type == "cpu",
        logging_steps=1,
        save_strategy="steps",
        save_steps=config.schedule.save_every,
        save_only_model=True,
        report_to="none",
        disable_tqdm=True,
    )
    trainer = GRPOTrainer(model=policy, reward_funcs=functions, args=args, train_dataset=Dataset.from_list(rows),
                          callbacks=[CheckpointsAsSteps(run_dir), LogLines(run_dir / "trl_log.jsonl")])
    prompts_per_step = optim.prompts_per_step * optim.gradient_accumulation_steps
    print(f"TRL {trl.__version__}: {config.schedule.max_steps} steps of {prompts_per_step} prompts x "
          f"{sampling.num_generations}, from {config.model.adapter}", flush=True)
    trainer.train()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="a run config (YAML); default: --preset's")
    parser.add_argument("--preset", default="arithmetic")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a field, e.g. grpo.beta=0")
    parser.add_argument("--no-sft", action="store_true", help="turn the preset's warm start off (pass its adapter)")
    parser.add_argument("--run-dir", required=True)
    args = parser.parse_args(argv)
    config = RunConfig.load(args.config) if args.config else preset_config(args.preset)
    if args.set:
        config = config.with_overrides(args.set)
    if args.no_sft:
        config.sft.enabled = False
    train(config.validate(), Path(args.run_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
