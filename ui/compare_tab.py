"""The Compare tab: two policies on the same prompt with the same seeds, scored by a run's reward
functions; or one run's rollouts of the same prompt at two training steps."""

from __future__ import annotations

import html
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import pandas as pd

from rft.background import Cancelled, Done, StopRequests, run_reporting
from rft.compare import (
    DEFAULT_COMPLETIONS,
    DEFAULT_MAX_NEW_TOKENS,
    MAX_COMPLETIONS,
    CompareError,
    GenerationSettings,
    SideResult,
    compare_policies,
    dataset_prompts,
    prompts_across_steps,
    rollouts_at_step,
    typed_prompt,
)
from rft.config import ConfigError
from rft.jobs import threads_beside_jobs
from rft.policies import resolve_policy, run_policy_keys
from rft.rewards import RewardCodeError
from rft.runs import read_config
from ui.common import missing_run_notice, notice, resolve_run, run_picker_update, score_table, stop_button
from ui.policy_picker import LOADED_POLICIES, POLICY_FAILURES, policy_picker_update

EMPTY_SIDE = pd.DataFrame(columns=["#", "completion", "total"])


@dataclass
class CompareTab:
    on_load: tuple[Callable, list, list]


def build(runs_root: Path) -> CompareTab:
    with gr.Row(equal_height=True, elem_classes="toolbar"):
        run = gr.Dropdown([], label="Run", scale=3, elem_id="compare-run",
                          info="Its dataset gives the prompts, its reward functions score, its sampling settings apply")
        refresh = gr.Button("↻ Refresh", size="sm", scale=0, min_width=90)

    gr.Markdown("### Two policies, same prompt, same seeds", elem_classes="section-title")
    with gr.Row(equal_height=True, elem_classes="toolbar"):
        policy_a = gr.Dropdown([], label="Policy A", scale=1, elem_id="compare-policy-a")
        policy_b = gr.Dropdown([], label="Policy B", scale=1, elem_id="compare-policy-b")
    with gr.Row(equal_height=True, elem_classes="toolbar"):
        prompt_pick = gr.Dropdown([], label="Prompt from the run's dataset", scale=3, elem_id="compare-prompt")
        prompt_typed = gr.Textbox(label="…or type a prompt (used when not empty)", lines=1, scale=3,
                                  elem_id="compare-typed")
    with gr.Row(equal_height=True, elem_classes="toolbar"):
        count = gr.Number(DEFAULT_COMPLETIONS, label="Completions per side", precision=0, minimum=1,
                          maximum=MAX_COMPLETIONS, elem_id="compare-count")
        max_tokens = gr.Number(DEFAULT_MAX_NEW_TOKENS, label="Max new tokens", precision=0, minimum=1,
                               elem_id="compare-max-tokens")
        temperature = gr.Number(1.0, label="Temperature", elem_id="compare-temperature",
                                info="The run's own value when a run is chosen")
        seed = gr.Number(0, label="Seed", precision=0, minimum=0)
        generate = gr.Button("Generate and score", variant="primary", elem_id="compare-generate")
        cancel = gr.Button("Cancel", elem_id="compare-cancel", interactive=False, min_width=90, scale=0)
    message = gr.HTML(elem_id="compare-message")
    with gr.Row(equal_height=False):
        with gr.Column():
            summary_a = gr.HTML(elem_id="compare-summary-a")
            table_a = gr.Dataframe(EMPTY_SIDE, interactive=False, wrap=True, max_height=420, elem_id="compare-table-a",
                                   elem_classes="score-table")
        with gr.Column():
            summary_b = gr.HTML(elem_id="compare-summary-b")
            table_b = gr.Dataframe(EMPTY_SIDE, interactive=False, wrap=True, max_height=420, elem_id="compare-table-b",
                                   elem_classes="score-table")

    gr.Markdown("### One run, same prompt, two training steps (from its rollouts; nothing generated)",
                elem_classes="section-title")
    with gr.Row(equal_height=True, elem_classes="toolbar"):
        stored_prompt = gr.Dropdown([], label="Prompt (steps it was rolled out at)", scale=4,
                                    elem_id="compare-stored-prompt")
        step_a = gr.Dropdown([], label="Step A", scale=1, elem_id="compare-step-a")
        step_b = gr.Dropdown([], label="Step B", scale=1, elem_id="compare-step-b")
        show_steps = gr.Button("Show", elem_id="compare-show-steps")
    steps_message = gr.HTML(elem_id="compare-steps-message")
    with gr.Row(equal_height=False):
        with gr.Column():
            steps_summary_a = gr.HTML(elem_id="compare-steps-summary-a")
            steps_table_a = gr.Dataframe(EMPTY_SIDE, interactive=False, wrap=True, max_height=420,
                                         elem_id="compare-steps-table-a", elem_classes="score-table")
        with gr.Column():
            steps_summary_b = gr.HTML(elem_id="compare-steps-summary-b")
            steps_table_b = gr.Dataframe(EMPTY_SIDE, interactive=False, wrap=True, max_height=420,
                                         elem_id="compare-steps-table-b", elem_classes="score-table")

    def load_pickers(run_id, key_a, key_b):
        run_update = run_picker_update(runs_root, run_id)
        return (run_update, policy_picker_update(runs_root, key_a, prefer_checkpoint=False),
                policy_picker_update(runs_root, key_b))

    def on_run_change(run_id):
        """The run's dataset prompts, its stored prompts, its sampling settings, and its own policies:
        A where it started (SFT warm start or base model), B its last checkpoint."""
        run_dir = resolve_run(runs_root, run_id)
        if run_dir is None:
            message = missing_run_notice(run_id) if run_id else \
                notice("Choose a run: its dataset gives the prompts and its reward functions score them.")
            return (gr.update(choices=[], value=None), gr.update(choices=[], value=None), gr.skip(), gr.skip(),
                    gr.skip(), gr.skip(), message)
        start, latest = run_policy_keys(runs_root, run_id)
        policies = (policy_picker_update(runs_root, start), policy_picker_update(runs_root, latest))
        try:
            config = read_config(run_dir)
            prompts = dataset_prompts(config)
        except (ConfigError, CompareError) as exc:
            return (gr.update(choices=[], value=None), stored_prompt_update(run_dir), gr.skip(), gr.skip(), *policies,
                    notice(str(exc), "warn"))
        labels = [prompt.label for prompt in prompts]
        settings = GenerationSettings.from_run(config)
        return (gr.update(choices=labels, value=labels[0] if labels else None), stored_prompt_update(run_dir),
                settings.max_new_tokens, settings.temperature, *policies, "")

    def stored_prompt_update(run_dir: Path):
        stored = prompts_across_steps(run_dir)
        choices = [(f"{p.label[:100]} (steps {', '.join(map(str, p.steps[:12]))}{'…' if len(p.steps) > 12 else ''})",
                    p.text) for p in stored]
        return gr.update(choices=choices, value=choices[0][1] if choices else None)

    def on_stored_prompt_change(run_id, prompt_text):
        run_dir = resolve_run(runs_root, run_id)
        steps = next((p.steps for p in prompts_across_steps(run_dir) if p.text == prompt_text), []) if run_dir else []
        return (gr.update(choices=steps, value=steps[0] if steps else None),
                gr.update(choices=steps, value=steps[-1] if steps else None))

    comparison_stops = StopRequests()

    def run_comparison(run_id, key_a, key_b, picked_label, typed, n, max_new, temp, seed_value, request: gr.Request):
        """Progress while both sides generate, then the two tables; Cancel, or closing the page, stops
        the generation within a token (rft.background)."""
        idle = gr.update(interactive=False)
        run_dir = resolve_run(runs_root, run_id)
        if run_dir is None:
            yield notice("Choose a run first.", "warn"), *empty_sides(), idle
            return
        try:
            config = read_config(run_dir)
            if typed and typed.strip():
                prompt = typed_prompt(typed, config)
            else:
                prompt = next((p for p in dataset_prompts(config) if p.label == picked_label), None)
                if prompt is None:
                    raise CompareError("Pick a prompt from the dataset, or type one.")
            settings = GenerationSettings.from_run(config, num_completions=int(n or 0), max_new_tokens=int(max_new or 0),
                                                   temperature=float(temp or 0), seed=int(seed_value or 0))
            policies = [resolve_policy(runs_root, key_a), resolve_policy(runs_root, key_b)]
        except (ConfigError, CompareError, *POLICY_FAILURES) as exc:
            yield notice(str(exc), "warn"), *empty_sides(), idle
            return
        started = time.monotonic()

        def work(report):
            with threads_beside_jobs(runs_root):
                return compare_policies(LOADED_POLICIES, policies, prompt, config, settings, on_side=report)

        try:
            for update in run_reporting(work, first_text=f"loading {policies[0].label}",
                                        stop=comparison_stops.start(request.session_hash)):
                if isinstance(update, Done):
                    results = update.result
                else:
                    yield (notice(f"Generating {settings.num_completions} completion(s) per side, up to "
                                  f"{settings.max_new_tokens} new tokens each: {update.text} · "
                                  f"{time.monotonic() - started:.0f} s"), *empty_sides(), gr.update(interactive=True))
        except Cancelled:
            yield notice("Comparison cancelled.", "info"), *empty_sides(), idle
            return
        except (CompareError, RewardCodeError, *POLICY_FAILURES) as exc:
            yield notice(f"The comparison failed: {exc}", "error"), *empty_sides(), idle
            return
        yield (notice(f"Seed {settings.seed}, temperature {settings.temperature:g}, top-p {settings.top_p:g}, "
                      f"top-k {settings.top_k or 'off'}: the same for both sides.", "ok"),
               *side_outputs(results[0]), *side_outputs(results[1]), idle)

    def show_two_steps(run_id, prompt_text, first, second):
        run_dir = resolve_run(runs_root, run_id)
        if run_dir is None or not prompt_text or first is None or second is None:
            return notice("Choose a run, a prompt and two steps.", "warn"), *empty_sides()
        try:
            sides = [rollouts_at_step(run_dir, int(first), prompt_text), rollouts_at_step(run_dir, int(second), prompt_text)]
        except CompareError as exc:
            return notice(str(exc), "warn"), *empty_sides()
        return "", *side_outputs(sides[0]), *side_outputs(sides[1])

    pickers = [run, policy_a, policy_b]
    refresh.click(load_pickers, pickers, pickers)
    run.change(on_run_change, run, [prompt_pick, stored_prompt, max_tokens, temperature, policy_a, policy_b, message])
    stored_prompt.change(on_stored_prompt_change, [run, stored_prompt], [step_a, step_b])
    generate.click(run_comparison, [run, policy_a, policy_b, prompt_pick, prompt_typed, count, max_tokens,
                                    temperature, seed],
                   [message, summary_a, table_a, summary_b, table_b, cancel])
    cancel.click(stop_button(comparison_stops), None, cancel)
    show_steps.click(show_two_steps, [run, stored_prompt, step_a, step_b],
                     [steps_message, steps_summary_a, steps_table_a, steps_summary_b, steps_table_b])
    return CompareTab(on_load=(load_pickers, pickers, pickers))


def empty_sides() -> tuple:
    return "", EMPTY_SIDE, "", EMPTY_SIDE


def side_outputs(result: SideResult) -> tuple[str, dict]:
    return side_summary(result), score_table(side_table(result))


def side_summary(result: SideResult) -> str:
    means = []
    for name, values in result.scores.items():
        present = [value for value in values if not math.isnan(value)]
        means.append(f"{html.escape(name)} {sum(present) / len(present):.3f}" if present else f"{html.escape(name)} -")
    failed = [problem for problem in result.problems if problem]
    errors = (f'<div class="side-errors">{len(failed)} completion(s) lost a score: {html.escape(failed[0])}</div>'
              if failed else "")
    return (f'<div class="side-title">{html.escape(result.title)}</div>'
            f'<div class="side-mean">mean total <b>{result.mean_total:.3f}</b> · {" · ".join(means)}</div>{errors}')


def side_table(result: SideResult) -> pd.DataFrame:
    frame = pd.DataFrame(result.rows())
    numbers = [column for column in frame.columns if column not in ("#", "completion")]
    frame[numbers] = frame[numbers].astype(float).round(3)
    return frame
