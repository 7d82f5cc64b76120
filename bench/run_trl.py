"""Hugging Face TRL's GRPOTrainer on a benchmark workload, configured as this project's trainer is.

TRL does not report where a step's time goes (its profiling timers go to W&B / MLflow only), so
this module measures it from the outside:
- step wall time: a TrainerCallback, from on_step_begin to on_step_end (generation happens
  inside the step, in `training_step`);
- generation: the policy's `generate` call, wrapped (the same call this project times);
- scoring: the reward functions, wrapped;
- completion tokens: counted from `generate`'s output up to and including the first EOS, as
  this project's trainer counts them.
"""

from __future__ import annotations

import tempfile
import time

import torch
import trl
from datasets import Dataset
from peft import LoraConfig
from transformers import TrainerCallback
from trl import GRPOConfig, GRPOTrainer

from bench import child
from bench.trl_reference import reward_functions
from bench.workload import Workload, wordle_prompts, wordle_reward_source
from rft import models
from rft.grpo.sampler import completion_mask_from_ids


class StepTimer:
    """Per-step totals of generation and scoring time and of completion tokens."""

    def __init__(self):
        self.steps: list[dict] = []
        self._reset()

    def _reset(self) -> None:
        self.generate_s = 0.0
        self.score_s = 0.0
        self.completion_tokens = 0
        self._step_started = time.perf_counter()

    def begin_step(self) -> None:
        self._reset()

    def end_step(self) -> None:
        self.steps.append({
            "step_s": time.perf_counter() - self._step_started,
            "generate_s": self.generate_s,
            "score_s": self.score_s,
            "completion_tokens": self.completion_tokens,
            "peak_memory_mb": child.process_peak_mb(),
        })


def course_reward_functions(timer: StepTimer) -> list:
    """The course's functions in TRL's batched signature (`trl_reference.reward_functions`), each
    call's time added to the timer's scoring time."""
    functions, _ = reward_functions(wordle_reward_source(), {}, ["secret", "past_guess_history", "word_list"])

    def timed(function):
        def score_batch(prompts, completions, **columns):
            started = time.perf_counter()
            scores = function(prompts, completions, **columns)
            timer.score_s += time.perf_counter() - started
            return scores

        score_batch.__name__ = function.__name__  # TRL names its reward metrics after it
        return score_batch

    return [timed(function) for function in functions]


def time_generation(model, eos_token_ids: list[int], timer: StepTimer) -> None:
    """Wrap the policy's generate so its time and the tokens it produced land in the timer."""
    generate = model.generate

    def timed_generate(*args, **kwargs):
        started = time.perf_counter()
        output = generate(*args, **kwargs)
        if output.is_cuda:
            torch.cuda.synchronize()
        timer.generate_s += time.perf_counter() - started
        prompt_length = kwargs["input_ids"].shape[1]
        completion_mask, _ = completion_mask_from_ids(output[:, prompt_length:], eos_token_ids)
        timer.completion_tokens += int(completion_mask.sum())
        return output

    model.generate = timed_generate


def run(workload: Workload) -> dict:
    timer = StepTimer()

    class StepTiming(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            timer.begin_step()

        def on_step_end(self, args, state, control, **kwargs):
            timer.end_step()

    model_dir = str(models.resolve_model_dir(workload.model))
    device = models.choose_device("auto")
    tokenizer = models.load_tokenizer(workload.model)
    dataset = Dataset.from_list(wordle_prompts(tokenizer, workload))
    with tempfile.TemporaryDirectory(prefix="trl-bench-") as output_dir:
        args = GRPOConfig(
            output_dir=output_dir,
            max_steps=workload.total_steps,
            per_device_train_batch_size=workload.prompts_per_step * workload.num_generations,
            gradient_accumulation_steps=1,
            num_generations=workload.num_generations,
            max_completion_length=workload.completion_length,
            temperature=workload.temperature,
            top_p=1.0,
            top_k=0,
            beta=workload.beta,
            use_bias_correction_kl=workload.use_bias_correction_kl,
            loss_type=workload.loss_type,
            num_iterations=1,
            scale_rewards="group",
            learning_rate=workload.learning_rate,
            lr_scheduler_type="constant",
            seed=workload.seed,
            shuffle_dataset=False,
            # TRL's defaults differ from this project's here: it checkpoints gradients and trains in
            # bf16 autocast. Both trainers use the same dtype (fp32 on CPU) and no checkpointing.
            gradient_checkpointing=False,
            bf16=False,
            fp16=False,
            model_init_kwargs={"dtype": models.choose_dtype(device), "attn_implementation": "sdpa"},
            use_cpu=device.type == "cpu",
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
        )
        trainer = GRPOTrainer(
            model=model_dir,
            reward_funcs=course_reward_functions(timer),
            args=args,
            train_dataset=dataset,
            peft_config=LoraConfig(
                r=workload.lora_rank,
                lora_alpha=workload.lora_alpha,
                lora_dropout=0.0,
                target_modules=workload.lora_targets,
                task_type="CAUSAL_LM",
            ),
            callbacks=[StepTiming()],
        )
        time_generation(trainer.model, trainer.eos_token_ids, timer)
        trainer.train()
    return {"trainer": "TRL GRPOTrainer", "version": trl.__version__, "steps": timer.steps}


if __name__ == "__main__":
    child.main(run)
