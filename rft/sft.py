"""The SFT warm start: supervised fine-tuning of the LoRA adapter on worked demonstrations.

GRPO learns only from differences between the completions it samples; a small model that never
writes a well-formed answer gives it nothing to compare. A few minutes of supervised training
on demonstrations in the task's exact format fixes that, and GRPO then continues from the
warm-started adapter (which is also its KL reference).

A demonstration is the completion for one dataset row: a task makes its own (rft.tasks, its
`demonstration`), a dataset file supplies a `completion` column. The loss covers only the
demonstration's tokens (and the end-of-turn token after it), never the prompt's. For a task played
in an environment, a demonstration is a whole conversation (the solver's game): the loss covers
the assistant's turns only, laid out as the episodes GRPO then trains on (rft.environments).
"""

from __future__ import annotations

import gc
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rft import data as datasets
from rft import lm_head, models, prefix_cache, tasks
from rft.config import DataConfig, RunConfig
from rft.distributed import Processes
from rft.environments.episodes import TurnRenderer, assistant_prefix
from rft.runs import RunWriter, sft_adapter_path

IGNORED_LABEL = -100  # positions the loss skips (the model's convention)
COMPLETION_COLUMN = "completion"


class StopRequested(Exception):
    """A graceful stop was requested during the warm start; nothing of it is kept."""


def demonstration_source(data: DataConfig, rows: list[dict]) -> tasks.Demonstrate:
    """How to get the demonstration of a row for this dataset; DatasetError when there is none."""
    if data.path:
        if rows and all(isinstance(row.get(COMPLETION_COLUMN), str) for row in rows):
            return lambda row, tokenizer: row[COMPLETION_COLUMN]
        raise datasets.DatasetError(
            f"sft: the SFT warm start needs a demonstration per row; add a {COMPLETION_COLUMN!r} column "
            "(the text the model should write after the prompt) to the dataset file, or turn SFT off."
        )
    task = tasks.task(data.preset)
    if task is None or task.demonstration is None:
        with_demonstrations = [name for name in tasks.built_in_names() if tasks.task(name).demonstration]
        raise datasets.DatasetError(
            f"sft: preset {data.preset!r} has no demonstrations; SFT works with {', '.join(with_demonstrations)}, "
            f"a reasoning-gym task (rg:...) or a dataset file with a {COMPLETION_COLUMN!r} column."
        )
    return task.demonstration


@dataclass
class Example:
    input_ids: list[int]  # prompt, then demonstration, then the end-of-turn token
    prompt_length: int  # the first tokens, which the loss skips
    model_mask: list[int] | None = None  # after the prompt: 1 on the tokens to learn; None: every one


def build_examples(config: RunConfig, tokenizer, writer: RunWriter) -> list[Example]:
    """One example per dataset row (the first `sft.examples` rows), over-long ones left out and logged.

    The prompt and the demonstration are tokenised apart, as generation sees them: the prompt
    alone, then the tokens the model writes after it.
    """
    rows = datasets.load_rows(config.data)[: config.sft.examples]
    demonstrate = demonstration_source(config.data, rows)
    examples, too_long = [], 0
    renderer = None
    for row in rows:
        messages = datasets.to_messages(row, config.data)
        prompt_ids = tokenizer(datasets.render_prompt(tokenizer, messages), add_special_tokens=False).input_ids
        demonstrated = demonstrate(row, tokenizer)
        if isinstance(demonstrated, str):
            completion_ids = tokenizer(demonstrated, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
            model_mask = None
        else:
            renderer = renderer or TurnRenderer(tokenizer)
            completion_ids, model_mask = conversation_tokens(renderer, demonstrated, assistant_prefix(messages))
        if len(prompt_ids) + len(completion_ids) > config.sft.max_length:
            too_long += 1
            continue
        examples.append(Example(prompt_ids + completion_ids, len(prompt_ids), model_mask))
    if too_long:
        writer.log(f"sft: {too_long} example(s) longer than sft.max_length={config.sft.max_length} tokens left out")
    if not examples:
        raise datasets.DatasetError(f"sft: every example is longer than sft.max_length={config.sft.max_length} tokens; "
                                    "raise the limit")
    writer.log(f"sft: {len(examples)} demonstrations")
    return examples


def conversation_tokens(renderer: TurnRenderer, conversation: list[dict], prefix: str) -> tuple[list[int], list[int]]:
    """A demonstrated conversation after the prompt as an episode's tokens and model mask: each
    assistant turn learnt (with its end-of-turn token), every other message context only."""
    eos = renderer.tokenizer.eos_token_id
    ids, mask, answers = [], [], []
    for message in conversation + [{"role": "assistant", "content": None}]:
        if message["role"] != "assistant":
            answers.append(message)  # consecutive environment messages render together, as in an episode
            continue
        if answers:
            turn = renderer.message_ids(answers, eos, prefix)
            ids, mask, answers = ids + turn, mask + [0] * len(turn), []
        if message["content"] is not None:
            turn = renderer.tokenizer(message["content"], add_special_tokens=False).input_ids + [eos]
            ids, mask = ids + turn, mask + [1] * len(turn)
    return ids, mask


def collate(examples: list[Example], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-padded input ids, attention mask, and labels that are the ids on demonstration tokens only."""
    width = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORED_LABEL, dtype=torch.long)
    for row, example in enumerate(examples):
        length = len(example.input_ids)
        ids = torch.tensor(example.input_ids, dtype=torch.long)
        input_ids[row, :length] = ids
        attention_mask[row, :length] = 1
        labels[row, example.prompt_length:length] = ids[example.prompt_length:]
        if example.model_mask is not None:
            context = torch.tensor(example.model_mask, dtype=torch.bool).logical_not()
            labels[row, example.prompt_length:length][context] = IGNORED_LABEL
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def shared_prefix_length(examples: list[Example]) -> int:
    """Leading tokens every example has in common, stopping before any example's last prompt token.

    Prompts of one task share their instructions (the Wordle system prompt is ~330 tokens of a
    ~480-token prompt); computed once per batch instead of once per example, they cost a
    fraction of the forward and backward passes. Stopping inside the prompts keeps every
    demonstration token's prediction in the per-example part.
    """
    return prefix_cache.common_prefix_length([e.input_ids for e in examples], min(e.prompt_length for e in examples) - 1)


def batch_loss(model, examples: list[Example], pad_token_id: int) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy over the demonstration tokens of a batch, and how many tokens that is.

    The shared prefix runs once and its KV cache is repeated for every example (gradients flow
    back through the repeat to the single prefix computation); the rest runs right-padded.
    """
    device = next(model.parameters()).device
    shared = shared_prefix_length(examples)
    cache = None
    if shared:
        prefix = torch.tensor([examples[0].input_ids[:shared]], device=device)
        cache, _ = prefix_cache.prefill(model, prefix, len(examples))
    rest = collate([Example(e.input_ids[shared:], e.prompt_length - shared, e.model_mask) for e in examples],
                   pad_token_id)
    rest = {k: v.to(device) for k, v in rest.items()}
    rows, width = rest["input_ids"].shape
    prefix_mask = torch.ones(rows, shared, dtype=torch.long, device=device)
    attention_mask = torch.cat([prefix_mask, rest["attention_mask"]], dim=1)
    positions = shared + torch.arange(width, device=device).expand(rows, -1)
    with prefix_cache.continuing(model, cache):
        states, head = lm_head.final_states(model, input_ids=rest["input_ids"], attention_mask=attention_mask,
                                            position_ids=positions, past_key_values=cache, use_cache=cache is not None)
    # The state at position t predicts the token at t + 1; only demonstrated tokens reach the LM head.
    labels = rest["labels"][:, 1:]
    demonstrated = labels != IGNORED_LABEL
    logp, _ = lm_head.head_logprobs(states[:, :-1][demonstrated], head, labels[demonstrated])
    return -logp.mean(), int(demonstrated.sum())


def batch_order(count: int, batch_size: int, steps: int, seed: int) -> list[list[int]]:
    """The example indices of each step: a seeded permutation per epoch, batches running across epochs."""
    positions = []
    epoch = 0
    while len(positions) < steps * batch_size:
        positions.extend(np.random.default_rng([seed, epoch]).permutation(count).tolist())
        epoch += 1
    return [positions[step * batch_size:(step + 1) * batch_size] for step in range(steps)]


def run_sft(config: RunConfig, tokenizer, writer: RunWriter, processes: Processes = Processes(),
            on_step: Callable[[int, int], None] | None = None) -> Path:
    """Train the run's LoRA adapter on demonstrations; save it to checkpoints/sft and return that folder.

    Rows go to sft_metrics.jsonl as steps end. `on_step(step, steps)` reports progress. A stop
    request ends the stage between steps with StopRequested; a resume then starts it again.
    Launched over several processes, each takes its share of every batch, and the loss is the
    mean over the whole batch's demonstration tokens, as in one process.
    """
    sft = config.sft
    started_at = time.time()
    writer.discard_warm_start()  # an interrupted earlier attempt's rows: this one starts over
    examples = build_examples(config, tokenizer, writer)
    model = models.wrap_with_lora(models.load_base_model(config.model), config.lora, config.model.adapter)
    steps = max(1, math.ceil(sft.epochs * len(examples) / sft.batch_size))
    params = [p for p in model.parameters() if p.requires_grad]
    processes.copy_from_main(params)
    optimizer = torch.optim.AdamW(params, lr=sft.learning_rate, weight_decay=config.optim.weight_decay)
    from transformers import get_scheduler

    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=0, num_training_steps=steps)
    writer.log(f"sft: {steps} steps of {sft.batch_size} demonstrations, learning rate {sft.learning_rate:g}")
    model.train()
    for step, indices in enumerate(batch_order(len(examples), sft.batch_size, steps, config.schedule.seed), start=1):
        if processes.from_main(writer.stop_requested()):
            raise StopRequested()
        step_started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        share = indices[processes.rank::processes.world_size]
        with models.training_autocast(model.device, config.model.dtype):
            loss, tokens = batch_loss(model, [examples[i] for i in share], tokenizer.pad_token_id) if share else (None, 0)
        batch_tokens = processes.sum(tokens)
        if share:
            (loss * (tokens / batch_tokens)).backward()  # this process's part of the batch's token mean
        processes.sum_gradients(params)
        batch_mean_loss = processes.sum(loss.item() * tokens if share else 0.0) / batch_tokens
        grad_norm = torch.nn.utils.clip_grad_norm_(params, config.optim.max_grad_norm)
        optimizer.step()
        learning_rate = scheduler.get_last_lr()[0]
        scheduler.step()
        writer.append_sft_metrics({
            "step": step,
            "epoch": step * sft.batch_size / len(examples),
            "loss": batch_mean_loss,
            "learning_rate": learning_rate,
            "grad_norm": float(grad_norm),
            "tokens": int(batch_tokens),
            "time/step": time.perf_counter() - step_started,
            "elapsed_s": time.time() - started_at,
        })
        if on_step is not None:
            on_step(step, steps)
    if processes.is_main:  # every process holds the same adapter
        staging = writer.checkpoints_dir / ".tmp-sft"
        shutil.rmtree(staging, ignore_errors=True)
        model.save_pretrained(staging, selected_adapters=["default"])
        folder = writer.commit_sft_adapter(staging)
        writer.log(f"sft: warm start saved to {folder.relative_to(writer.run_dir)} after {time.time() - started_at:.0f} s")
    processes.wait_for_all()
    del model, optimizer
    gc.collect()
    return sft_adapter_path(writer.run_dir)
