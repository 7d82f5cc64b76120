"""Command line: python -m rft train | resume | runs | export | eval | eval-diff | sweep."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def _train(args) -> int:
    from rft.config import RunConfig
    from rft.distributed import join_launched_processes
    from rft.grpo.trainer import train
    from rft.presets import preset_config
    from rft.runs import default_runs_root, new_run_id, run_dir_for

    if args.config:
        config = RunConfig.load(args.config)
    else:
        config = preset_config(args.preset)
    if args.set:
        config = config.with_overrides(args.set)
    if args.name:
        config.name = args.name
    if args.sft is not None:
        config.sft.enabled = args.sft
    if args.report_to is not None:
        config.report.to = args.report_to
    config.validate()
    processes = join_launched_processes(config.model.device)
    # Under a launcher, the main process names the run and the others use its name.
    run_dir = processes.from_main(
        Path(args.run_dir) if args.run_dir else run_dir_for(args.runs_root or default_runs_root(), new_run_id(config.name)))
    if processes.is_main:
        print(f"run directory: {run_dir}" + (f" ({processes.world_size} processes)" if processes.launched else ""), flush=True)
    train(config, run_dir, progress=not args.no_progress, processes=processes)
    return 0


def _resume(args) -> int:
    from rft.distributed import join_launched_processes
    from rft.grpo.trainer import train
    from rft.runs import effective_state, extend_run, extended_config, read_config, read_status

    run_dir = Path(args.run_dir)
    config = read_config(run_dir)
    if args.max_steps is None and effective_state(read_status(run_dir)) == "finished":
        print(f"run {run_dir.name} has finished; to train it further, add --max-steps with more steps than "
              f"{config.schedule.max_steps}", file=sys.stderr)
        return 2
    processes = join_launched_processes(config.model.device)
    if args.max_steps is not None:
        try:  # every process checks; the main one writes, before train()'s first barrier
            config = extend_run(run_dir, args.max_steps) if processes.is_main \
                else extended_config(run_dir, args.max_steps)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    train(config, run_dir, resume=True, progress=not args.no_progress, processes=processes)
    return 0


def _runs(args) -> int:
    from rft.runs import list_runs

    runs = list_runs(args.runs_root)
    if not runs:
        print("no runs yet")
        return 0
    print(f"{'run':<44} {'state':<9} {'step':>11} {'reward':>8}  started")
    for run in runs:
        reward = f"{run.last_reward:.3f}" if run.last_reward is not None else "-"
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(run.started_at)) if run.started_at else "-"
        print(f"{run.run_id:<44} {run.state:<9} {f'{run.step}/{run.max_steps}':>11} {reward:>8}  {started}")
    return 0


def _export(args) -> int:
    from rft.export import export_adapter

    written = export_adapter(args.run_dir, args.out, step=args.step, merged=args.merged, merged_dtype=args.dtype)
    for key, value in written.items():
        print(f"{key}: {value}")
    return 0


def _sweep(args) -> int:
    from rft.config import RunConfig
    from rft.presets import preset_config
    from rft.runs import default_runs_root
    from rft.sweep import parse_grid, run_sweep

    config = RunConfig.load(args.config) if args.config else preset_config(args.preset)
    if args.set:
        config = config.with_overrides(args.set)
    name = args.name or f"sweep-{time.strftime('%Y%m%d-%H%M%S')}"
    run_sweep(config, parse_grid(args.grid or []), args.runs_root or default_runs_root(), name, args.eval_count,
              args.eval_seed, args.eval_max_new_tokens, progress=not args.no_progress)
    return 0


def _eval_diff(args) -> int:
    from rft.sweep import compare_evaluation_files

    try:
        print(compare_evaluation_files(args.files))
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _eval(args, rest: list[str]) -> int:
    from rft import held_out, tasks

    if args.task == "run":
        return held_out.main(rest)
    task = tasks.task(args.task)
    if task is None or task.evaluator is None:
        evaluated = [name for name in tasks.built_in_names() if tasks.task(name).evaluator]
        print(f"unknown evaluation task {args.task!r}; available: {', '.join(evaluated + ['run'])}", file=sys.stderr)
        return 2
    return task.evaluator.main(rest)


def build_parser() -> argparse.ArgumentParser:
    from rft.export import MERGED_DTYPES

    parser = argparse.ArgumentParser(prog="python -m rft", description="GRPO reinforcement fine-tuning")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model (in this process)")
    train.add_argument("--config", help="a config.yaml (e.g. from the dashboard's download)")
    train.add_argument("--preset", default="wordle", help="a built-in recipe when no --config is given")
    train.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a field, e.g. grpo.beta=0")
    train.add_argument("--name", help="the run's name")
    train.add_argument("--sft", action=argparse.BooleanOptionalAction,
                       help="warm start with supervised fine-tuning on demonstrations before GRPO (default: the "
                            "config's sft.enabled; the wordle and arithmetic presets turn it on)")
    train.add_argument("--report-to", nargs="*", metavar="TRACKER",
                       help="mirror the run to experiment trackers: tensorboard, trackio, wandb, mlflow "
                            "(default: the config's report.to)")
    train.add_argument("--run-dir", help="the run directory (default: a new one under --runs-root)")
    train.add_argument("--runs-root", help="where new run directories go (default: ./runs or $RFT_RUNS_DIR)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(handler=_train)

    resume = commands.add_parser("resume", help="resume a run from its last checkpoint")
    resume.add_argument("run_dir")
    resume.add_argument("--max-steps", type=int,
                        help="train to this step: a finished run trains on, a stopped one to a new length "
                             "(constant learning rate only)")
    resume.add_argument("--no-progress", action="store_true")
    resume.set_defaults(handler=_resume)

    runs = commands.add_parser("runs", help="list runs with their state and last reward")
    runs.add_argument("--runs-root")
    runs.set_defaults(handler=_runs)

    export = commands.add_parser("export", help="export a checkpoint's LoRA adapter (and merged model)")
    export.add_argument("run_dir")
    export.add_argument("--step", type=int, help="checkpoint step (default: the latest)")
    export.add_argument("--out", required=True, help="output folder; a .zip is written beside it")
    export.add_argument("--merged", action="store_true", help="also write the merged full model")
    export.add_argument("--dtype", choices=tuple(MERGED_DTYPES), default="fp32",
                        help="the merged model's weights (default fp32; bf16 is half the size)")
    export.set_defaults(handler=_export)

    sweep = commands.add_parser("sweep", help="train one run per point of a grid, evaluate each on held-out items")
    sweep.add_argument("--config", help="the config every run starts from (default: --preset's)")
    sweep.add_argument("--preset", default="arithmetic", help="a built-in recipe when no --config is given")
    sweep.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a field in every run")
    sweep.add_argument("--grid", action="append", metavar="KEY=V1,V2",
                       help="a field and its values; several --grid give every combination")
    sweep.add_argument("--name", help="the sweep's name (its runs' names start with it)")
    sweep.add_argument("--runs-root", help="where the runs go (default: ./runs or $RFT_RUNS_DIR)")
    sweep.add_argument("--eval-count", type=int, default=100, help="held-out problems or games per evaluation")
    sweep.add_argument("--eval-seed", type=int, default=0, help="which held-out items (the same for every run)")
    sweep.add_argument("--eval-max-new-tokens", type=int, help="generation limit in evaluation (task default)")
    sweep.add_argument("--no-progress", action="store_true")
    sweep.set_defaults(handler=_sweep)

    eval_diff = commands.add_parser("eval-diff", help="compare saved evaluations (eval --out files), each against the first")
    eval_diff.add_argument("files", nargs="+", help="evaluation JSON files: the first is the baseline")
    eval_diff.set_defaults(handler=_eval_diff)

    evaluate = commands.add_parser("eval", help="evaluate a model on a task (wordle, arithmetic) or a run on its held-out rows (run RUN_DIR); see: python -m rft eval run -h", add_help=False)
    evaluate.add_argument("task")
    evaluate.set_defaults(handler=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    from rft.config import ConfigError
    from rft.data import DatasetError
    from rft.export import ExportError
    from rft.models import ModelLoadError

    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    try:
        if args.command == "eval":
            return _eval(args, rest)
        if rest:
            parser.error(f"unrecognised arguments: {' '.join(rest)}")
        return args.handler(args)
    except (ConfigError, DatasetError, ModelLoadError, ExportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
