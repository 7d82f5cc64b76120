"""Benchmark: Hugging Face TRL's GRPOTrainer against this project's trainer, on identical work.

    python -m bench.run                      the default comparison (G=8, 64 tokens, 5 steps)
    python -m bench.run --scaling            G in 4/8/16 at 64 tokens, then 128/256 tokens at G=8, 2 steps each
    python -m bench.run --only ours          one trainer only (e.g. while optimising it)

For each workload, TRL runs first, then ours, each in a fresh child process (run_trl.py,
run_ours.py) so that each one's peak memory is its own. The record of every run goes to
bench/results/<time>.json; the markdown tables are printed and written to bench/results/latest.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

if __package__ in (None, ""):  # run as `python bench/run.py`: make `bench` and `rft` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import report  # noqa: E402
from bench.workload import Workload  # noqa: E402
from rft.config import BUNDLED_MODEL  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "bench" / "results"
CHILD_MODULES = {"trl": "bench.run_trl", "ours": "bench.run_ours"}
TRAINER_LABELS = {"trl": "TRL GRPOTrainer", "ours": "rft (ours)"}
SCALING_GROUP_SIZES = (4, 8, 16)
SCALING_COMPLETION_LENGTHS = (64, 128, 256)
SCALING_STEPS = 2  # per workload: a 256-token TRL step takes minutes on CPU
LOG_TAIL_LINES = 40
MEMORY_HEADROOM_BYTES = 2 * 2**30  # left free for the rest of the machine
MEMORY_POLL_S = 0.5
BUSY_MACHINE_CORES = 0.25  # other processes using more than this many cores make timings unreliable


class BenchmarkError(RuntimeError):
    """A child process failed; the message ends with the tail of its output."""


class MemoryLimitExceeded(RuntimeError):
    """A child grew past the memory the machine had free; it was stopped before the OOM killer
    could pick a process (possibly someone else's)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, help=f"measured steps per trainer (default 5; {SCALING_STEPS} with --scaling)")
    parser.add_argument("--warmup-steps", type=int, default=1, help="steps run first and left out of the figures")
    parser.add_argument("--generations", type=int, default=8, help="G: completions per prompt")
    parser.add_argument("--completion-length", type=int, default=64, help="max completion tokens")
    parser.add_argument("--scaling", action="store_true",
                        help="two sweeps from the default workload instead of one workload: "
                             "G in 4/8/16 at 64 tokens, then max tokens 128/256 at G=8")
    parser.add_argument("--only", choices=sorted(CHILD_MODULES), help="run one trainer only")
    parser.add_argument("--model", default=BUNDLED_MODEL,
                        help="the model both trainers train, as model.name_or_path takes (default: the bundled one)")
    parser.add_argument("--threads", type=int,
                        help="torch CPU threads in both children (OMP_NUM_THREADS); default: torch's own choice")
    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = SCALING_STEPS if args.scaling else 5
    if args.steps < 1 or args.warmup_steps < 0:
        parser.error("--steps must be at least 1 and --warmup-steps at least 0")
    return args


def planned_workloads(args: argparse.Namespace) -> list[Workload]:
    # One factor at a time from the default (G=8, 64 tokens): each sweep shows how cost grows with
    # that factor alone, and five workloads fit in half an hour where the full nine-cell grid does not.
    shape = [(g, SCALING_COMPLETION_LENGTHS[0]) for g in SCALING_GROUP_SIZES] \
        + [(8, length) for length in SCALING_COMPLETION_LENGTHS[1:]] if args.scaling \
        else [(args.generations, args.completion_length)]
    return [Workload(num_generations=g, completion_length=length, steps=args.steps, warmup_steps=args.warmup_steps,
                     model=args.model) for g, length in shape]


def busy_cpu_seconds() -> float:
    """CPU seconds spent by every process on the machine, plus time stolen by the hypervisor."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - times.iowait - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def tree_rss_bytes(process: psutil.Process) -> int:
    total = 0
    for member in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += member.memory_info().rss
    return total


def stop_tree(process: psutil.Process) -> None:
    for member in [*process.children(recursive=True), process]:
        with contextlib.suppress(psutil.Error):
            member.kill()


def run_child(trainer: str, workload: Workload, threads: int | None) -> dict:
    """Run one trainer on one workload in a fresh interpreter; its JSON result, plus how much CPU
    other processes used meanwhile (competition for the cores makes step times incomparable)."""
    environment = dict(os.environ)
    if threads:
        environment["OMP_NUM_THREADS"] = str(threads)
    memory_limit = psutil.virtual_memory().available - MEMORY_HEADROOM_BYTES
    with tempfile.TemporaryDirectory(prefix="rft-bench-") as scratch:
        result_path, log_path = Path(scratch) / "result.json", Path(scratch) / "output.log"
        command = [sys.executable, "-m", CHILD_MODULES[trainer], json.dumps(workload.to_dict()), str(result_path)]
        started, busy_before, ours_before = time.monotonic(), busy_cpu_seconds(), children_cpu_seconds()
        with open(log_path, "w", encoding="utf-8") as log:
            child = subprocess.Popen(command, cwd=REPO_ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT)
            watched = psutil.Process(child.pid)
            while child.poll() is None:
                if tree_rss_bytes(watched) > memory_limit:
                    stop_tree(watched)
                    child.wait()
                    raise MemoryLimitExceeded(
                        f"over {memory_limit / 2**30:.1f} GB, the memory free at its start less "
                        f"{MEMORY_HEADROOM_BYTES / 2**30:.0f} GB: stopped")
                time.sleep(MEMORY_POLL_S)
        elapsed = time.monotonic() - started
        other_cpu = busy_cpu_seconds() - busy_before - (children_cpu_seconds() - ours_before)
        if child.returncode != 0 or not result_path.exists():
            tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-LOG_TAIL_LINES:]
            raise BenchmarkError(f"{TRAINER_LABELS[trainer]} failed (exit status {child.returncode}); "
                                 "the end of its output:\n" + "\n".join(tail))
        result = json.loads(result_path.read_text(encoding="utf-8"))
    result["other_processes_cpu_cores"] = max(0.0, other_cpu / elapsed)
    return result


def machine_description() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")
    memory_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal"))
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": memory_kib / 2**20}


def matmul_bounds() -> dict:
    """What a large matrix product reaches where the trainers run, in GFLOP/s: on a CPU fp32, and
    bf16 where it is native; on a GPU bf16, the dtype both trainers use there."""
    import torch

    from bench.generation import matmul_bound_gflops
    from rft import models

    if torch.cuda.is_available():
        return {"bf16": matmul_bound_gflops(torch.bfloat16, device=torch.device("cuda"))}
    bounds = {"fp32": matmul_bound_gflops(torch.float32)}
    if models.cpu_has_native_bf16():
        bounds["bf16"] = matmul_bound_gflops(torch.bfloat16)
    return bounds


def generation_flops_per_token(workload: Workload) -> float:
    """The arithmetic of one generated token of the workload: every linear layer (the LM head too) and
    attention over the prompt and half the completion, the mean context. The model is built on the
    meta device: its shapes, no weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from bench.generation import flops_per_token
    from bench.workload import wordle_prompts
    from rft import models

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(models.resolve_model_dir(workload.model)))
    tokenizer = models.load_tokenizer(workload.model)
    prompt = wordle_prompts(tokenizer, workload)[0]["prompt"]
    prompt_length = len(tokenizer(prompt, add_special_tokens=False).input_ids)
    return flops_per_token(model, prompt_length + workload.completion_length // 2)


def write_json(path: Path, record: dict) -> None:
    """Through a temporary file, so an interrupted run never leaves half a JSON file."""
    staging = path.with_suffix(".tmp")
    staging.write_text(json.dumps(record, indent=1), encoding="utf-8")
    staging.replace(path)


def measure(trainer: str, workload: Workload, threads: int | None) -> dict:
    """One trainer's entry in a comparison: its result and summary, or why it has none."""
    load_before = os.getloadavg()
    try:
        result = run_child(trainer, workload, threads)
    except MemoryLimitExceeded as stopped:
        print(f"    {stopped}", flush=True)
        return {"trainer": TRAINER_LABELS[trainer], "failed": f"out of memory ({stopped})"}
    summary = report.summarise(result, workload.warmup_steps)
    print(f"    median step {summary['median_step_s']:.1f} s, {summary['completion_tokens_per_s']:.1f} completion tok/s, "
          f"peak {summary['peak_memory_mb']:,.0f} MB (whole run {result['wall_s']:.0f} s)", flush=True)
    other = result["other_processes_cpu_cores"]
    if other > BUSY_MACHINE_CORES:
        print(f"    warning: other processes used {other:.2f} of {os.cpu_count()} cores meanwhile; "
              "these timings are not comparable with a quiet machine's", flush=True)
    return {**result, "summary": summary, "load_average_before": load_before, "load_average_after": os.getloadavg()}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    trainers = [args.only] if args.only else ["trl", "ours"]
    workloads = planned_workloads(args)
    created = datetime.datetime.now().astimezone()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    json_path = RESULTS_DIR / f"{created:%Y%m%d-%H%M%S}.json"
    record = {
        "created": created.isoformat(timespec="seconds"),
        "command": "python -m bench.run " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": {**machine_description(), "matmul_bound_gflops": matmul_bounds()},
        "load_average_before": os.getloadavg(),
        "comparisons": [],
    }
    for number, workload in enumerate(workloads, start=1):
        comparison = {"workload": workload.to_dict(),
                      "generation_flops_per_token": generation_flops_per_token(workload)}
        record["comparisons"].append(comparison)
        for trainer in trainers:
            print(f"[{number}/{len(workloads)}] {TRAINER_LABELS[trainer]}, {workload.label()}: "
                  f"{workload.warmup_steps} warm-up + {workload.steps} measured steps ...", flush=True)
            try:
                comparison[trainer] = measure(trainer, workload, args.threads)
            except BenchmarkError as error:
                print(error, file=sys.stderr)
                return 1
            if "device" in comparison[trainer]:
                record["machine"].update(device=comparison[trainer]["device"],
                                         torch_threads=comparison[trainer]["torch_threads"])
        if all("summary" in comparison.get(t, {}) for t in report.TRAINERS):
            comparison["ratios"] = report.ratios(comparison["trl"]["summary"], comparison["ours"]["summary"])
        write_json(json_path, record)
    markdown = report.markdown(record)
    (RESULTS_DIR / "latest.md").write_text(markdown, encoding="utf-8")
    print()
    print(markdown)
    print(f"Written: {json_path.relative_to(REPO_ROOT)} and bench/results/latest.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
