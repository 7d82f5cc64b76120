"""The Train tab: model, dataset, reward code, hyperparameters, and the job's controls.

The form's values become a RunConfig through rft.train_form; the job is started, stopped and
resumed through rft.jobs, so the UI only ever shows what the run directory says.
"""

from __future__ import annotations

import html
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import pandas as pd

from rft import jobs, rewards
from rft import train_form as form
from rft.background import Done, run_reporting
from rft.environments.runtime import TEMPLATE as ENVIRONMENT_TEMPLATE
from rft.environments.runtime import check as environment_check
from rft.config import ConfigError, DataConfig, RunConfig
from rft.data import SUPPORTED_SUFFIXES, preset_names
from rft.monitoring import run_progress
from rft.rewards import versions as reward_versions
from rft.runs import ACTIVE_STATES, effective_state, read_config, read_metrics, read_sft_metrics, read_status
from ui.common import (
    conversation_html,
    missing_run_notice,
    notice,
    problems_notice,
    resolve_run,
    score_table,
    state_badge,
)

UPLOAD_CHOICE = "Uploaded file"
SINGLE_REPLY, EPISODES = "Single reply", "Episodes in an environment"
DEFAULT_PRESET = "wordle"
STATUS_REFRESH_S = 2.0


@dataclass
class TrainTab:
    current_run: gr.State  # run id the controls act on: the last launched, or the running job
    on_load: tuple[Callable, list, list]  # (fn, inputs, outputs) to run when a browser (re)connects
    # on_load previews the dataset too: it queues with the events that change the preview, so a
    # dataset chosen while the page loads is previewed after the page's own preview, not before it.
    on_load_concurrency_id: str = "dataset-preview"


def starting_config() -> tuple[RunConfig, str]:
    """The preset's config (course rewards and defaults), or plain defaults with the reason."""
    from rft.presets import preset_config

    try:
        return preset_config(DEFAULT_PRESET), ""
    except Exception as exc:
        return RunConfig(), f"The {DEFAULT_PRESET} preset could not be loaded ({type(exc).__name__}: {exc}); " \
                           "starting from an empty reward editor."


def model_choices() -> list[tuple[str, str]]:
    from rft.models import discover_models

    extra = [Path("models")] if Path("models").is_dir() else []
    return [(f"{m.label} · {m.size_mb:,.0f} MB", m.reference) for m in discover_models(extra)]


def device_choices() -> tuple[list[str], str]:
    """Device options and a line saying where 'auto' trains."""
    import torch

    from rft.models import choose_device

    choices = ["auto", "cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    resolved = choose_device("auto")
    note = f"auto trains on **{resolved}**"
    if resolved.type == "cuda":
        note += f" ({torch.cuda.get_device_name(resolved)})"
    else:
        note += " (no CUDA GPU found: small models and short completions train best)"
    return choices, note


def build(runs_root: Path) -> TrainTab:
    config, preset_warning = starting_config()
    models = model_choices()
    devices, device_note = device_choices()
    datasets = preset_names() + [UPLOAD_CHOICE]

    with gr.Row(equal_height=True, elem_classes="toolbar"):
        run_name = gr.Textbox(config.name, label="Run name", scale=2, min_width=140, elem_id="run-name")
        model_choice = gr.Dropdown(models, value=models[0][1] if models else None, label="Model",
                                   info="Discovered models; size on disk", scale=4, elem_id="model-choice")
        model_path = gr.Textbox(label="Or a local model directory / .gguf file", placeholder="/path/to/model",
                                info="Overrides the picker when filled", scale=4, elem_id="model-path")
        device = gr.Dropdown(devices, value="auto", label="Device", info=device_note, scale=2, min_width=140)

    with gr.Row(equal_height=True, elem_classes="job-bar"):
        launch = gr.Button("Launch", variant="primary", size="md", scale=0, min_width=110, elem_id="launch")
        stop = gr.Button("Stop", variant="stop", size="md", scale=0, min_width=90, elem_id="stop")
        resume = gr.Button("Resume", size="md", scale=0, min_width=90, elem_id="resume")
        export_yaml = gr.Button("Config as YAML", size="md", scale=0, min_width=130)
        with gr.Column(scale=1):
            job_status = gr.HTML(elem_id="job-status", min_height=32)
    job_message = gr.HTML(elem_id="job-message")

    # The essentials and what they add up to (batch, time) sit under the job bar; everything else is
    # in "All settings" below the dataset and reward code.
    fields_by_path = {field.path: field for field in form.ALL_FIELDS}
    field_inputs: dict[str, gr.components.Component] = {}
    with gr.Row(equal_height=True, elem_classes="hyperparameters essentials"):
        for path in form.ESSENTIAL_FIELDS:
            field_inputs[path] = _field_input(fields_by_path[path], form.get_path(config, path))
    with gr.Row(equal_height=True):
        batch_summary = gr.Markdown(form.launch_summary(config, runs_root), elem_id="batch-summary")
        quick_try = gr.Button("Quick try", size="sm", scale=0, min_width=100, elem_id="quick-try")

    with gr.Row(equal_height=False):
        with gr.Column(scale=5, min_width=380, elem_classes="panel"):
            gr.Markdown("### Dataset")
            with gr.Row():
                dataset_choice = gr.Dropdown(datasets, value=datasets[0], label="Source", scale=2,
                                             info="Built-in presets, or upload a file", elem_id="dataset-choice")
                prompt_column = gr.Textbox(config.data.prompt_column, label="Prompt column", scale=1, min_width=100,
                                           info="The column with the prompt; Enter applies it", elem_id="prompt-column")
            with gr.Row(elem_classes="toolbar"):
                upload = gr.UploadButton("Upload JSONL / CSV / Parquet…", file_types=list(SUPPORTED_SUFFIXES),
                                         size="sm", elem_id="dataset-upload")
                load_recipe = gr.Button("Load this dataset's recipe", size="sm", elem_id="load-recipe",
                                        visible=form.recipe_for(datasets[0]) is not None)
            upload_path = gr.State(None)
            dataset_message = gr.HTML(elem_id="dataset-message")
            preview = gr.Dataframe(label="First rows", interactive=False, wrap=True, max_height=260,
                                   elem_id="dataset-preview")
            preview_rows = gr.State([])

        with gr.Column(scale=7, min_width=480, elem_classes="panel"):
            gr.Markdown("### Reward functions")
            with gr.Row(equal_height=False, elem_classes="toolbar"):
                library_choice = gr.Dropdown(list(rewards.LIBRARY), label="Library", scale=3,
                                             info="Insert a ready-made function at the end of the code")
                insert = gr.Button("Insert", size="sm", scale=0, min_width=80)
            reward_code = gr.Code(config.rewards.source, language="python", label="Reward code (Python)",
                                  lines=16, max_lines=24, interactive=True, elem_id="reward-code")
            with gr.Row():
                check = gr.Button("Check", size="sm", elem_id="check-rewards")
                try_button = gr.Button("Try on preview rows", size="sm", elem_id="try-rewards")
                apply_button = gr.Button("Apply to the running job", size="sm", elem_id="apply-rewards")
            check_message = gr.HTML(notice(preset_warning, "warn"), elem_id="check-message")
            weights = gr.Dataframe(headers=["function", "convention", "weight", "description"], interactive=True,
                                   static_columns=[0, 1, 3], label="Functions and weights (edit the weight column)",
                                   max_height=180, elem_id="reward-weights")
            pasted = gr.Textbox(label="Completion to score", lines=2, max_lines=6, elem_id="pasted-completion",
                                placeholder="Paste a completion; Try scores it against each preview row")
            try_message = gr.HTML(elem_id="try-message")
            try_result = gr.Dataframe(pd.DataFrame(columns=["prompt", "completion", "total", "error"]), label="Scores",
                                      interactive=False, wrap=True, max_height=320, elem_id="try-result",
                                      elem_classes="score-table")

    with gr.Row(equal_height=False, elem_classes="panel"):
        with gr.Column():
            gr.Markdown("### Rollouts")
            rollout_mode = gr.Radio([SINGLE_REPLY, EPISODES], value=EPISODES if config.environment.enabled
                                    else SINGLE_REPLY, label="The model answers",
                                    info="once per prompt, or in a multi-turn episode: your environment answers each "
                                         "reply, and GRPO compares whole episodes", elem_id="rollout-mode")
            with gr.Group(visible=config.environment.enabled, elem_id="environment-panel") as environment_panel:
                environment_code = gr.Code(config.environment.source or ENVIRONMENT_TEMPLATE, language="python",
                                           label="Environment code (Python): a class with reset(example), "
                                                 "step(reply) and optionally reward()",
                                           lines=14, max_lines=24, interactive=True, elem_id="environment-code")
                with gr.Row():
                    check_environment = gr.Button("Check", size="sm", elem_id="check-environment")
                    try_environment = gr.Button("Play one episode (first preview row, chosen model)", size="sm",
                                                elem_id="try-environment")
                environment_message = gr.HTML(elem_id="environment-message")
                episode_view = gr.HTML(elem_id="environment-episode", elem_classes="completion-card")

    with gr.Accordion("All settings: sampling, GRPO and its variants, optimisation, LoRA, schedule, environment, SFT",
                      open=False, elem_id="all-settings"):
        with gr.Row(equal_height=False, elem_classes="hyperparameters"):
            for group, fields in form.HYPERPARAMETER_GROUPS.items():
                with gr.Column(min_width=200, elem_classes="panel hp-group"):
                    gr.Markdown(f"**{group}**")
                    for field in fields:
                        if field.path not in form.ESSENTIAL_FIELDS:
                            field_inputs[field.path] = _field_input(field, form.get_path(config, field.path))

    with gr.Row():
        command = gr.Code(form.cli_command("config.yaml"), language="shell", label="Reproduce from a shell",
                          lines=1, interactive=False, scale=3, elem_id="cli-command")
        yaml_file = gr.File(label="config.yaml", interactive=False, scale=1, height=70, visible=False)
    current_run = gr.State(None)
    timer = gr.Timer(STATUS_REFRESH_S)

    config_inputs = {run_name, model_choice, model_path, device, dataset_choice, upload_path, prompt_column,
                     reward_code, weights, rollout_mode, environment_code, *field_inputs.values()}

    def build_config(values: dict) -> RunConfig:
        """The RunConfig the form describes; raises ConfigError (or ValueError for weights)."""
        if values[dataset_choice] == UPLOAD_CHOICE:
            if not values[upload_path]:
                raise ConfigError(["data: upload a dataset file, or choose a built-in preset"])
            data = {"data.preset": None, "data.path": values[upload_path]}
        else:
            data = {"data.preset": values[dataset_choice], "data.path": None}
        model_reference = chosen_model(values[model_choice], values[model_path])
        try:
            weight_values = form.weights_from_table(values[weights])
        except ValueError as exc:
            raise ConfigError([f"rewards.weights: {exc}"]) from None
        settings = {
            "name": values[run_name] or "",
            "model.name_or_path": model_reference,
            "model.device": values[device] or "auto",
            "data.prompt_column": values[prompt_column] or "prompt",
            "rewards.source": values[reward_code] or "",
            "rewards.weights": weight_values,
            "environment.source": (values[environment_code] or "") if values[rollout_mode] == EPISODES else "",
            **data,
            **{path: values[component] for path, component in field_inputs.items()},
        }
        return form.config_from_values(RunConfig(), settings)

    def current_data_config(choice: str, stored: str | None, column: str) -> DataConfig:
        if choice == UPLOAD_CHOICE:
            return DataConfig(preset=None, path=stored, prompt_column=column or "prompt")
        return DataConfig(preset=choice, prompt_column=column or "prompt")

    def refresh_preview(choice, stored, column, picked_model, typed_model):
        if choice == UPLOAD_CHOICE and not stored:
            return None, [], notice("Upload a JSONL, CSV or Parquet file with a prompt column.", "info")
        result = form.preview_dataset(current_data_config(choice, stored, column),
                                      model=chosen_model(picked_model, typed_model))
        kind = "ok" if result.rows else "error"
        return preview_table(result.frame), result.rows, notice(result.message, kind)

    def choose_dataset(choice, stored, column, picked_model, typed_model):
        """A new dataset also decides the SFT default: on when it has demonstrations, else off."""
        if choice == UPLOAD_CHOICE and not stored:
            return *refresh_preview(choice, stored, column, picked_model, typed_model), False
        result = form.preview_dataset(current_data_config(choice, stored, column),
                                      model=chosen_model(picked_model, typed_model))
        kind = "ok" if result.rows else "error"
        return preview_table(result.frame), result.rows, notice(result.message, kind), result.has_demonstrations

    sft_enabled = field_inputs["sft.enabled"]
    recipe_outputs = [run_name, reward_code, weights, rollout_mode, environment_code,
                      *(field_inputs[f.path] for f in form.ALL_FIELDS), check_message]

    def recipe_updates(choice):
        """The form set to the dataset's recipe: its name, reward code and weights, its environment
        (single reply when it has none; the code box keeps what it holds), every hyperparameter."""
        recipe = form.recipe_for(choice)
        if recipe is None:
            return *[gr.skip()] * (len(recipe_outputs) - 1), notice(f"{choice} has no recipe; nothing changed.", "info")
        found = rewards.check(recipe.rewards.source)
        episodes = recipe.environment.enabled
        return (recipe.name, recipe.rewards.source, form.weights_table(found.functions, recipe.rewards.weights),
                EPISODES if episodes else SINGLE_REPLY, recipe.environment.source if episodes else gr.skip(),
                *form.field_values(recipe),
                notice(f"Loaded the {choice} recipe: its reward functions, {'environment, ' if episodes else ''}"
                       "and hyperparameters.", "ok"))

    def switch_dataset(choice, stored, column, code, picked_model, typed_model):
        """A preset with a recipe brings it along when the reward code is some recipe's own, unedited;
        edited code is never replaced without the user asking (the Load button)."""
        frame, rows, message, demonstrations = choose_dataset(choice, stored, column, picked_model, typed_model)
        has_recipe = form.recipe_for(choice) is not None
        if has_recipe and form.is_untouched_recipe_code(code or ""):
            return frame, rows, message, gr.update(visible=True), *recipe_updates(choice)
        keep = [gr.skip()] * len(recipe_outputs)
        keep[recipe_outputs.index(sft_enabled)] = demonstrations
        if has_recipe:
            keep[-1] = notice(f"Your edited reward code was kept. The {choice} dataset has a recipe of its own: "
                              "“Load this dataset's recipe” replaces the reward code and hyperparameters with it.",
                              "info")
        return frame, rows, message, gr.update(visible=has_recipe), *keep

    def on_upload(file, column, picked_model, typed_model):
        if file is None:
            return gr.skip(), None, *choose_dataset(UPLOAD_CHOICE, None, column, picked_model, typed_model), gr.skip()
        try:
            stored = str(form.store_upload(file, runs_root))
        except OSError as exc:
            return (gr.skip(), None, None, [], notice(f"Could not keep the uploaded file: {exc}", "error"), gr.skip(),
                    gr.skip())
        # An uploaded file has no recipe of its own.
        return (UPLOAD_CHOICE, stored, *choose_dataset(UPLOAD_CHOICE, stored, column, picked_model, typed_model),
                gr.update(visible=False))

    def insert_library(code, name):
        if not name:
            return gr.skip(), notice("Choose a library function to insert.", "info")
        text = (code or "").rstrip()
        return (text + "\n\n\n" if text else "") + rewards.library_source(name), \
            notice(f"Inserted {name}; press Check to see every function.", "ok")

    def check_code(code, table, rows, choice, stored, column):
        try:
            current = form.weights_from_table(table)
        except ValueError:
            current = {}
        result = rewards.check(code or "")
        key_warnings = form.missing_key_warnings(code or "", rows, current_data_config(choice, stored, column)) \
            if result.ok else []
        kind = "error" if not result.ok else "warn" if key_warnings else "ok"
        text = "\n".join([result.message() or "No reward function found.", *key_warnings])
        return _code_notice(text, kind), form.weights_table(result.functions, current)

    def try_code(code, table, rows, choice, stored, column, completion):
        try:
            weight_values = form.weights_from_table(table)
        except ValueError as exc:
            return None, notice(str(exc), "error")
        known = set(rewards.check(code or "").function_names) if weight_values else set()
        weight_values = {k: v for k, v in weight_values.items() if k in known}
        data = current_data_config(choice, stored, column)
        try:
            frame, message, kind = form.try_rewards(code or "", weight_values, rows, data, completion or "", 10.0)
        except Exception as exc:  # the worker could not start, say: show it, keep the page alive
            return None, notice(f"Scoring failed: {type(exc).__name__}: {exc}", "error")
        return score_table(frame), _code_notice(message, kind)

    def apply_to_job(code, table, run_id):
        """Send the edited reward code to the running job, which swaps it in at its next step; the
        weights table shows the functions of the code sent."""
        run_dir = resolve_run(runs_root, run_id)
        if run_dir is None or effective_state(read_status(run_dir)) not in ACTIVE_STATES:
            return notice("No running job to apply it to: launch one first (a new run uses this code as it is).",
                          "info"), gr.skip()
        try:
            weight_values = form.weights_from_table(table)
        except ValueError as exc:
            return notice(str(exc), "error"), gr.skip()
        result = rewards.check(code or "")
        table_update = form.weights_table(result.functions, weight_values)
        if not result.ok:
            return _code_notice("Not applied; the running job keeps its reward code:\n" + result.message(),
                                "error"), table_update
        known = set(result.function_names)
        reward_versions.request_change(run_dir, code, {k: v for k, v in weight_values.items() if k in known})
        return notice(f"Sent to {run_dir.name}: it takes effect at the next step boundary. The job line says when, "
                      "and Monitor marks the step on every chart.", "ok"), table_update

    def check_environment_code(code, class_name):
        info, message = environment_check(code or "", (class_name or "").strip() or None)
        return _code_notice(message, "ok" if info else "error")

    def play_episode(values: dict):
        """One episode with the form's model and environment on the first preview row."""
        rows = values[preview_rows]
        if not rows:
            yield notice("Choose a dataset first: the episode starts from its first row.", "error"), ""
            return
        try:
            config = build_config({**values, rollout_mode: EPISODES})
        except ConfigError as exc:
            yield problems_notice("The configuration is invalid:", exc.problems), ""
            return
        started = time.monotonic()

        def work(report):
            with jobs.threads_beside_jobs(runs_root):
                return form.try_episode(config, rows[0])

        try:
            for update in run_reporting(work, first_text="loading the model"):
                if isinstance(update, Done):
                    played, message, kind = update.result
                    yield _code_notice(message, kind), episode_card(played)
                else:
                    yield notice(f"Playing one episode: {update.text} · {time.monotonic() - started:.0f} s", "info"), ""
        except Exception as exc:  # a model that cannot load: say so, keep the page
            yield notice(f"The episode failed: {type(exc).__name__}: {exc}", "error"), ""

    def update_summary(values: dict):
        try:
            return form.launch_summary(build_config(values), runs_root)
        except ConfigError as exc:
            return "Fix the form to see the effective batch: " + "; ".join(exc.problems)

    def launch_run(values: dict):
        try:
            config = build_config(values)
        except ConfigError as exc:
            return gr.skip(), problems_notice("The configuration is invalid:", exc.problems), gr.skip()
        problems = config.problems()
        if problems:
            return gr.skip(), problems_notice("The configuration is invalid:", problems), gr.skip()
        try:
            run_dir = jobs.start_job(config, runs_root)
        except ConfigError as exc:
            return gr.skip(), problems_notice("Cannot launch:", exc.problems), gr.skip()
        except jobs.JobError as exc:
            # The job that is in the way becomes this page's current one, so Stop here acts on it.
            return reattach(), notice(f"Cannot launch: {exc}", "warn"), gr.skip()
        except Exception as exc:
            return gr.skip(), notice(f"Launch failed: {type(exc).__name__}: {exc}", "error"), gr.skip()
        message = notice(f"Started run {run_dir.name}. Watch it in Monitor; it keeps training if you close "
                         "this page.", "ok")
        return run_dir.name, message, form.cli_command(run_dir / "config.yaml")

    def stop_run(run_id):
        run_dir = resolve_run(runs_root, run_id)
        if run_dir is None:
            return notice("No run to stop: launch one first.", "info")
        try:
            jobs.stop_job(run_dir)
        except jobs.JobError as exc:
            return notice(str(exc), "warn")
        return notice(f"Stopping {run_id}: it finishes the current step, saves a checkpoint and stops.", "ok")

    def resume_run(run_id, max_steps):
        """Resume a stopped run to its planned step; a finished one trains on to Max steps, when that is more."""
        run_dir = resolve_run(runs_root, run_id)
        if run_dir is None:
            return notice("No run to resume: launch one, or open one from the Runs tab.", "info")
        try:
            planned = read_config(run_dir).schedule.max_steps
            finished = effective_state(read_status(run_dir)) == "finished"
            longer = int(max_steps) if finished and max_steps and int(max_steps) > planned else None
            jobs.resume_job(run_dir, longer)
        except (jobs.JobError, ConfigError) as exc:
            return notice(f"Cannot resume: {exc}", "warn")
        except Exception as exc:
            return notice(f"Resume failed: {type(exc).__name__}: {exc}", "error")
        to = f", now to step {longer} (it planned {planned})" if longer else ""
        return notice(f"Resuming {run_id} from its last checkpoint{to}.", "ok")

    def write_yaml(values: dict):
        try:
            config = build_config(values)
        except ConfigError as exc:
            return gr.skip(), problems_notice("The configuration is invalid:", exc.problems), gr.skip()
        folder = Path(tempfile.mkdtemp(prefix="rft-config-"))
        path = folder / f"{config.name.strip() or 'run'}.yaml"
        config.save(path)
        problems = config.problems()
        message = notice(f"Saved {path.name}. Train it with the command shown.", "ok") if not problems else \
            problems_notice("Saved, but this configuration will not run yet:", problems)
        return gr.update(value=str(path), visible=True), message, form.cli_command(path.name)

    def show_job(run_id):
        """The job line, and whether to keep polling: only while the job can still change by itself."""
        run_dir = resolve_run(runs_root, run_id)
        if run_dir is None:
            message = missing_run_notice(run_id) if run_id else \
                '<span class="muted">No job yet: configure a run and press Launch.</span>'
            return message, gr.Timer(active=False)
        status = read_status(run_dir)
        state = effective_state(status)
        active = state in ACTIVE_STATES
        progress = run_progress(state, status, read_metrics(run_dir) if active else pd.DataFrame(),
                                sft_metrics=read_sft_metrics(run_dir) if active else None)
        text = f"{state_badge(state)} <b>{run_id}</b> · {progress.describe()}"
        text += reward_edit_outcome(run_dir)
        if state == "failed" and progress.error:
            text += f'<div class="notice notice-error">{html.escape(progress.error)}</div>'
        return text, gr.Timer(active=state in ACTIVE_STATES)

    def reattach():
        """On page load: the running job, if any, is the current one (a reload never loses it)."""
        active = jobs.active_jobs(runs_root)
        return active[0].run_id if active else gr.skip()

    model_inputs = [model_choice, model_path]
    in_order = {"concurrency_id": TrainTab.on_load_concurrency_id, "concurrency_limit": 1}  # see TrainTab
    upload.upload(on_upload, [upload, prompt_column, *model_inputs],
                  [dataset_choice, upload_path, preview, preview_rows, dataset_message, sft_enabled, load_recipe],
                  **in_order)
    dataset_choice.input(switch_dataset, [dataset_choice, upload_path, prompt_column, reward_code, *model_inputs],
                         [preview, preview_rows, dataset_message, load_recipe, *recipe_outputs], **in_order)
    prompt_column.submit(choose_dataset, [dataset_choice, upload_path, prompt_column, *model_inputs],
                         [preview, preview_rows, dataset_message, sft_enabled], **in_order)
    for component in model_inputs:  # the preview shows the prompts through the chosen model's chat template
        component.change(refresh_preview, [dataset_choice, upload_path, prompt_column, *model_inputs],
                         [preview, preview_rows, dataset_message], show_progress="hidden", **in_order)
    load_recipe.click(recipe_updates, dataset_choice, recipe_outputs)
    rollout_mode.change(lambda mode: gr.update(visible=mode == EPISODES), rollout_mode, environment_panel)
    check_environment.click(check_environment_code, [environment_code, field_inputs["environment.class_name"]],
                            environment_message)
    try_environment.click(play_episode, {*config_inputs, preview_rows}, [environment_message, episode_view])
    insert.click(insert_library, [reward_code, library_choice], [reward_code, check_message])
    check.click(check_code, [reward_code, weights, preview_rows, dataset_choice, upload_path, prompt_column],
                [check_message, weights])
    apply_button.click(apply_to_job, [reward_code, weights, current_run], [check_message, weights]) \
        .then(show_job, current_run, [job_status, timer])
    try_button.click(try_code, [reward_code, weights, preview_rows, dataset_choice, upload_path, prompt_column,
                                pasted], [try_result, try_message])
    for path in dict.fromkeys(form.BATCH_FIELDS + ("schedule.epochs",) + form.ESTIMATE_FIELDS):
        field_inputs[path].change(update_summary, config_inputs, batch_summary, show_progress="hidden")
    for component in (model_choice, model_path, device):
        component.change(update_summary, config_inputs, batch_summary, show_progress="hidden")
    quick_try.click(lambda: list(form.QUICK_TRY.values()), None, [field_inputs[path] for path in form.QUICK_TRY])
    launch.click(launch_run, config_inputs, [current_run, job_message, command])
    stop.click(stop_run, current_run, job_message).then(show_job, current_run, [job_status, timer])
    resume.click(resume_run, [current_run, field_inputs["schedule.max_steps"]], job_message).then(show_job, current_run, [job_status, timer])
    export_yaml.click(write_yaml, config_inputs, [yaml_file, job_message, command])
    current_run.change(show_job, current_run, [job_status, timer], show_progress="hidden")
    timer.tick(show_job, current_run, [job_status, timer], show_progress="hidden")

    def on_load(choice, stored, column, code, table, picked_model, typed_model):
        frame, rows, message = refresh_preview(choice, stored, column, picked_model, typed_model)
        return reattach(), frame, rows, message, *check_code(code, table, rows, choice, stored, column)

    return TrainTab(
        current_run=current_run,
        on_load=(on_load, [dataset_choice, upload_path, prompt_column, reward_code, weights, *model_inputs],
                 [current_run, preview, preview_rows, dataset_message, check_message, weights]),
    )


PREVIEW_PROMPT_WIDTH_PX, PREVIEW_COLUMN_WIDTH_PX = 300, 150


def chosen_model(picked: str | None, typed: str | None) -> str:
    """The model the form trains: a typed local path overrides the picker."""
    return (typed or "").strip() or picked or ""


def preview_table(frame):
    """The dataset preview with room for every column: left to size itself, the wrapped prompt takes
    the whole panel and the columns reward functions read are pushed out of sight."""
    if frame is None or frame.empty:
        return frame
    widths = [PREVIEW_PROMPT_WIDTH_PX if column == "prompt" else PREVIEW_COLUMN_WIDTH_PX for column in frame.columns]
    return gr.update(value=frame, column_widths=[f"{width}px" for width in widths])


def _field_input(field: form.FormField, value):
    common = {"label": field.label, "info": field.help, "elem_id": field.element_id, "min_width": 150}
    if field.kind == "choice":
        return gr.Dropdown(list(field.choices), value=value, **common)
    if field.kind == "multi":
        return gr.Dropdown(list(field.choices), value=list(value), multiselect=True, **common)
    if field.kind == "bool":
        return gr.Checkbox(value=bool(value), **common)
    if field.kind == "text" or field.optional:
        # An empty box is the field's "off" value (None); a Number input cannot be empty.
        return gr.Textbox(value="" if value is None else str(value), placeholder="empty = off", **common)
    if field.kind == "int":
        # No precision: Gradio would round 2.5 to 2 silently; config_from_values refuses it instead.
        return gr.Number(value=value, step=1, **common)
    return gr.Number(value=value, step=0.01, **common)


def reward_edit_outcome(run_dir: Path) -> str:
    """What became of the latest reward edit sent to this run, for the job line."""
    if reward_versions.request_waiting(run_dir):
        return " · a reward edit waits for the next step"
    outcome = reward_versions.last_outcome(run_dir)
    if outcome is None:
        return ""
    if outcome["state"] == "applied":
        return f' · reward code v{outcome["version"]} since step {outcome["from_step"]}'
    return f'<div class="notice notice-warn">The last reward edit was refused: {html.escape(outcome["message"])}</div>'


def episode_card(played: dict | None) -> str:
    """A played episode: its prompt, then the conversation, with each reward function's score."""
    if not played:
        return ""
    scores = " · ".join(f"{name} {value:.3f}" for name, value in played["rewards"].items() if not math.isnan(value))
    return (f'<div class="card-title">Episode: {played["turns"]} turn(s)</div>'
            f'<div class="card-scores">{html.escape(scores or "no score")}</div>'
            f'<pre class="card-text">{html.escape(played["prompt"])}</pre>{conversation_html(played["messages"])}')


def _code_notice(text: str, kind: str) -> str:
    """A message whose lines (code with a caret under the error) must keep their spacing."""
    return f'<div class="notice notice-{kind}"><pre>{html.escape(text)}</pre></div>'
