"""Datasets: built-in presets, JSONL / CSV / Parquet files and Hugging Face datasets (a save_to_disk
folder, or an id in the local cache), checked, turned into chat prompts.

A row is a dict with a `prompt` (a string, or a list of chat messages) and any other columns;
those other columns reach reward functions as `example`. A prompt whose last message is from
the assistant is continued by the model (the Wordle course pre-fills `<think>`).
"""

from __future__ import annotations

import csv
import io
import json
import random
import re
from pathlib import Path

import pandas as pd

from rft.config import DataConfig

SUPPORTED_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
MAX_REPORTED_ERRORS = 5
# Datasets are read whole, in the dashboard (preview, checks) and in the trainer; the cap keeps a
# wrong file from exhausting memory. Prompt sets for GRPO are far smaller (GSM8K is 4 MB).
MAX_DATASET_BYTES = 200 * 2**20


class DatasetError(ValueError):
    """A dataset that cannot be used; the message says what is wrong and how to fix it."""


HELD_OUT_SEED = 20250103  # a dataset file's held-out rows: fixed, so every run of a file holds out the same


def preset_names() -> list[str]:
    """The built-in datasets the Train tab offers: the project's tasks, then a few of reasoning-gym's
    (any of its tasks works as `rg:<name>` in a config)."""
    from rft import tasks
    from rft.tasks.reasoning_gym import SHOWN_TASKS

    return tasks.built_in_names() + [tasks.LIBRARY_PREFIX + name for name in SHOWN_TASKS]


def is_known_preset(preset: str | None) -> bool:
    from rft import tasks

    return tasks.task(preset) is not None


def _read_jsonl(path: Path) -> list[dict]:
    rows, errors = [], []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DatasetError(
                    f"{path.name}, line {number}: not UTF-8 text ({exc.reason} at byte {exc.start}). "
                    "Save the file as UTF-8."
                ) from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                errors.append(f"line {number}: {exc.msg} (column {exc.colno})")
                continue
            if not isinstance(record, dict):
                errors.append(f"line {number}: expected a JSON object, got {type(record).__name__}")
                continue
            rows.append(record)
    if errors:
        shown = "; ".join(errors[:MAX_REPORTED_ERRORS])
        more = f" and {len(errors) - MAX_REPORTED_ERRORS} more" if len(errors) > MAX_REPORTED_ERRORS else ""
        raise DatasetError(f"{path.name}: {len(errors)} malformed line(s): {shown}{more}. Each line must be one JSON object.")
    return rows


def _read_json(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise DatasetError(f"{path.name}: not UTF-8 text. Save the file as UTF-8.") from None
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path.name}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise DatasetError(f"{path.name}: a .json dataset must be a list of objects; use JSONL for one object a line.")
    return data


def _read_csv(path: Path) -> list[dict]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path.name}: not UTF-8 text (byte {exc.start}). Save the file as UTF-8.") from None
    try:
        return list(csv.DictReader(io.StringIO(text)))
    except csv.Error as exc:
        raise DatasetError(f"{path.name}: malformed CSV: {exc}") from None


def _read_parquet(path: Path) -> list[dict]:
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:
        raise DatasetError(f"{path.name}: cannot read as Parquet: {exc}") from None
    return frame.to_dict(orient="records")


READERS = {".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv, ".parquet": _read_parquet}


def read_dataset(data: DataConfig) -> list[dict]:
    """Rows of `data.path`, validated: a file, a folder written by `datasets.save_to_disk`, or the id of a
    Hugging Face dataset already in this machine's cache (never downloaded at run time)."""
    path = Path(data.path).expanduser()
    if path.is_file():
        return read_file(path, data.prompt_column)
    if path.is_dir():
        return validate_rows(_read_saved_dataset(path, data.split), data.prompt_column, path.name)
    if HUB_ID.fullmatch(data.path):
        return validate_rows(_read_cached_hub_dataset(data.path, data.subset, data.split), data.prompt_column,
                             data.path)
    raise DatasetError(f"{path}: no such file or folder. Check the path or upload the file again.")


HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def _split_of(dataset, split: str, source: str):
    """The `split` of a DatasetDict (a plain Dataset is its own only split)."""
    if not hasattr(dataset, "keys"):
        return dataset
    if split not in dataset:
        raise DatasetError(f"{source}: no split {split!r}; it has {', '.join(dataset.keys())}. Set data.split.")
    return dataset[split]


def _read_saved_dataset(folder: Path, split: str) -> list[dict]:
    import datasets as hf_datasets

    try:
        dataset = hf_datasets.load_from_disk(str(folder))
    except FileNotFoundError:
        raise DatasetError(f"{folder}: a folder, but not one written by datasets' save_to_disk (no dataset_info.json "
                           "or dataset_dict.json). Point data.path at a data file or such a folder.") from None
    return _split_of(dataset, split, folder.name).to_list()


def _read_cached_hub_dataset(repo_id: str, subset: str | None, split: str) -> list[dict]:
    """A Hub dataset from the local cache: the files of a downloaded snapshot (hub cache), else what
    `datasets` itself cached when it last loaded the id. Offline: nothing is fetched."""
    import os

    os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "1"
    import datasets as hf_datasets
    from huggingface_hub import constants

    snapshot = _hub_snapshot(repo_id, Path(constants.HF_HUB_CACHE))
    try:
        dataset = hf_datasets.load_dataset(str(snapshot) if snapshot else repo_id, subset, split=split)
    except ValueError as exc:  # an unknown split or subset: datasets names the ones there are
        raise DatasetError(f"{repo_id}: {exc}") from None
    except Exception as exc:
        raise DatasetError(
            f"{repo_id}: not in this machine's Hugging Face cache ({type(exc).__name__}), and nothing is downloaded "
            f"at run time. Download it once with `huggingface-cli download --repo-type dataset {repo_id}` (or "
            "datasets.load_dataset), or save it with save_to_disk and give that folder.") from None
    return dataset.to_list()


def _hub_snapshot(repo_id: str, hub_cache: Path) -> Path | None:
    """The cached snapshot folder of a Hub dataset (`refs/main` names it), or None when it is not there."""
    repo = hub_cache / f"datasets--{repo_id.replace('/', '--')}"
    try:
        revision = (repo / "refs" / "main").read_text(encoding="utf-8").strip()
    except OSError:
        return None
    snapshot = repo / "snapshots" / revision
    return snapshot if snapshot.is_dir() else None


def read_file(path: str | Path, prompt_column: str = "prompt") -> list[dict]:
    """Rows of a dataset file, validated: it exists, parses, is not empty, has the prompt column."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetError(f"{path}: no such file. Check the path or upload the file again.")
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise DatasetError(f"{path.name}: unsupported file type {path.suffix!r}; use one of {', '.join(SUPPORTED_SUFFIXES)}.")
    size = path.stat().st_size
    if size > MAX_DATASET_BYTES:
        raise DatasetError(
            f"{path.name}: the file is {size / 2**20:,.0f} MB; datasets up to {MAX_DATASET_BYTES / 2**20:,.0f} MB "
            "are accepted. Keep the rows you need, e.g. `head -n 100000 big.jsonl > smaller.jsonl`."
        )
    rows = reader(path)
    return validate_rows(rows, prompt_column, path.name)


def validate_rows(rows: list[dict], prompt_column: str, source: str) -> list[dict]:
    if not rows:
        raise DatasetError(f"{source}: the dataset is empty; it needs at least one row with a {prompt_column!r} column.")
    missing = [i for i, row in enumerate(rows) if prompt_column not in row]
    if missing:
        columns = ", ".join(sorted(rows[missing[0]].keys())) or "none"
        raise DatasetError(
            f"{source}: row {missing[0] + 1} has no {prompt_column!r} column (columns: {columns}). "
            "Rename the column holding the prompt, or set data.prompt_column."
        )
    for i, row in enumerate(rows):
        prompt = row[prompt_column]
        if isinstance(prompt, str):
            if not prompt.strip():
                raise DatasetError(f"{source}: row {i + 1} has an empty prompt.")
        elif not _is_message_list(prompt):
            raise DatasetError(
                f"{source}: row {i + 1}: the prompt must be text or a list of chat messages "
                '({"role": ..., "content": ...}), got ' + type(prompt).__name__
            )
    return rows


def _is_message_list(value) -> bool:
    return (
        isinstance(value, list)
        and len(value) > 0
        and all(isinstance(m, dict) and "role" in m and isinstance(m.get("content"), str) for m in value)
    )


def load_rows(data: DataConfig) -> list[dict]:
    """The dataset a run trains on, from its file or its preset, without its held-out rows."""
    return _training_and_held_out(data)[0]


def load_held_out_rows(data: DataConfig) -> list[dict]:
    """The `data.eval_size` rows a run evaluates on and never trains on (none when it is 0).

    A dataset file's are a fixed random choice of its rows (the same for every run of the file);
    a task preset's are its evaluator's held-out items."""
    return _training_and_held_out(data)[1]


def _training_and_held_out(data: DataConfig) -> tuple[list[dict], list[dict]]:
    from rft import tasks

    task = tasks.task(data.preset) if not data.path else None
    if data.path:
        rows = read_dataset(data)
        if data.eval_size >= len(rows):
            raise DatasetError(f"data.eval_size: {data.eval_size} held-out rows leave none of the file's "
                               f"{len(rows)} rows to train on; hold out fewer")
        held_out_at = set(random.Random(HELD_OUT_SEED).sample(range(len(rows)), data.eval_size))
        held_out = [row for index, row in enumerate(rows) if index in held_out_at]
        rows = [row for index, row in enumerate(rows) if index not in held_out_at]
    elif task is not None:
        # A task's held-out rows are its own held-out items (its evaluator's), never among its training rows.
        try:
            rows = validate_rows(task.rows(data), "prompt", f"preset {data.preset!r}")
            held_out = task.held_out_rows(data, data.eval_size) if data.eval_size else []
        except tasks.UnknownTask as exc:
            raise DatasetError(f"data.preset: {exc}") from None
    else:
        raise DatasetError(f"data.preset: unknown preset {data.preset!r}; choose one of "
                           f"{', '.join(tasks.built_in_names())}, or a reasoning-gym task as rg:<task> (e.g. rg:chain_sum).")
    return (rows[: data.limit] if data.limit else rows), held_out


def to_messages(row: dict, data: DataConfig) -> list[dict]:
    """The chat messages of a row: its prompt, with the configured system prompt and prefix."""
    prompt = row[data.prompt_column]
    if isinstance(prompt, str):
        messages = [{"role": "user", "content": prompt}]
        if data.system_prompt:
            messages.insert(0, {"role": "system", "content": data.system_prompt})
    else:
        messages = [dict(m) for m in prompt]
    if data.assistant_prefix and messages[-1]["role"] != "assistant":
        messages.append({"role": "assistant", "content": data.assistant_prefix})
    return messages


def example_of(row: dict, data: DataConfig) -> dict:
    """What reward functions receive as `example`: every column but the prompt."""
    return {k: v for k, v in row.items() if k != data.prompt_column}


def render_prompt(tokenizer, messages: list[dict], tools: list[dict] | None = None) -> str:
    """The prompt text the model sees; a final assistant message is continued, not closed. `tools`
    (JSON schemas, an environment's) are rendered by the chat template."""
    continues = messages[-1]["role"] == "assistant"
    return tokenizer.apply_chat_template(
        messages,
        tools=tools,
        tokenize=False,
        add_generation_prompt=not continues,
        continue_final_message=continues,
    )


def prompt_text_for_display(messages: list[dict]) -> str:
    """The last user message: what a person wants to read when browsing prompts."""
    users = [m["content"] for m in messages if m["role"] == "user"]
    return users[-1] if users else messages[-1]["content"]


def preview_frame(rows: list[dict], data: DataConfig, count: int = 5) -> pd.DataFrame:
    """The first rows for the UI: prompt as readable text, other columns shortened."""
    records = []
    for row in rows[:count]:
        record = {"prompt": prompt_text_for_display(to_messages(row, data))}
        for key, value in example_of(row, data).items():
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            record[key] = text if len(text) <= 120 else text[:117] + "..."
        records.append(record)
    return pd.DataFrame.from_records(records)
