"""From per-step timings to the figures users compare, and the markdown tables that show them.

Per trainer, over the measured steps (warm-up excluded):
- median step wall time;
- completion tokens per second: the completion tokens of the measured steps / their wall time
  (completion lengths vary from step to step, so this is the throughput, not a per-step median);
- generate / score / train: per-step medians, where train is the rest of the step (reference
  pass, policy forward and backward, optimiser step, bookkeeping), measured the same way for
  both trainers;
- generation tokens per second: completion tokens / the seconds spent generating them, and its
  share of this machine's matrix-multiply bound (fp32, and bf16 where the CPU multiplies it
  natively) for the arithmetic a generated token needs;
- peak memory.
Ratios: speedup = TRL step time / ours, throughput ratio = ours tok/s / TRL tok/s,
memory ratio = ours / TRL.
"""

from __future__ import annotations

import statistics

TRAINERS = ("trl", "ours")


def summarise(result: dict, warmup_steps: int) -> dict:
    measured = result["steps"][warmup_steps:]
    if not measured:
        raise ValueError(f"{result['trainer']} reported {len(result['steps'])} step(s), none after the warm-up")
    step_seconds = [s["step_s"] for s in measured]
    tokens = [s["completion_tokens"] for s in measured]
    return {
        "measured_steps": len(measured),
        "median_step_s": statistics.median(step_seconds),
        "completion_tokens_per_s": sum(tokens) / sum(step_seconds),
        "completion_tokens_per_step": sum(tokens) / len(tokens),
        "generation_tokens_per_s": sum(tokens) / sum(s["generate_s"] for s in measured),
        "generate_s": statistics.median(s["generate_s"] for s in measured),
        "score_s": statistics.median(s["score_s"] for s in measured),
        "train_s": statistics.median(s["step_s"] - s["generate_s"] - s["score_s"] for s in measured),
        "peak_memory_mb": result["peak_memory_mb"],
    }


def ratios(trl: dict, ours: dict) -> dict:
    return {
        "speedup": trl["median_step_s"] / ours["median_step_s"],
        "throughput_ratio": ours["completion_tokens_per_s"] / trl["completion_tokens_per_s"],
        "memory_ratio": ours["peak_memory_mb"] / trl["peak_memory_mb"],
    }


def generation_figures(summary: dict, comparison: dict, bounds: dict | None) -> str:
    """'355 tok/s (31% of fp32, 14% of bf16)': generation speed and the share of each matmul bound
    it reaches, where the run recorded the bounds and the arithmetic of a generated token."""
    rate = summary["generation_tokens_per_s"]
    flops = comparison.get("generation_flops_per_token")
    if not bounds or not flops:
        return f"{rate:.0f} tok/s"
    shares = ", ".join(f"{rate * flops / 1e9 / gflops:.0%} of {precision}" for precision, gflops in bounds.items())
    return f"{rate:.0f} tok/s ({shares})"


def trainer_name(entry: dict) -> str:
    return f"{entry['trainer']} {entry['version']}" if "version" in entry else entry["trainer"]


def comparison_table(comparison: dict, bounds: dict | None = None) -> str:
    """One row per trainer, then the ratios, for one workload."""
    lines = [
        "| trainer | median step (s) | completion tok/s | generate (s) | generation speed (share of the matmul bound) "
        "| score (s) | train (s) | peak memory (MB) | completion tokens / step | other processes' CPU (cores) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key in TRAINERS:
        entry = comparison.get(key)
        if entry is None:
            continue
        if "failed" in entry:
            lines.append(f"| {trainer_name(entry)} | {entry['failed']} ||||||||")
            continue
        s = entry["summary"]
        lines.append(
            f"| {trainer_name(entry)} | {s['median_step_s']:.1f} | {s['completion_tokens_per_s']:.1f} "
            f"| {s['generate_s']:.1f} | {generation_figures(s, comparison, bounds)} | {s['score_s']:.3f} "
            f"| {s['train_s']:.1f} | {s['peak_memory_mb']:,.0f} | {s['completion_tokens_per_step']:.0f} "
            f"| {entry['other_processes_cpu_cores']:.2f} |"
        )
    if "ratios" in comparison:
        r = comparison["ratios"]
        lines += [
            "",
            f"**Speedup (TRL step time / ours): {r['speedup']:.2f}x** · throughput ratio (ours tok/s / TRL tok/s): "
            f"{r['throughput_ratio']:.2f}x · **peak-memory ratio (ours / TRL): {r['memory_ratio']:.2f}**",
        ]
    return "\n".join(lines)


def scaling_table(comparisons: list[dict], bounds: dict | None = None) -> str:
    """One row per workload: how each trainer's cost grows with group size and completion length."""
    lines = [
        "| G | max tokens | TRL step (s) | ours step (s) | speedup | TRL tok/s | ours tok/s | TRL generation "
        "| ours generation | TRL peak (MB) | ours peak (MB) | memory ratio |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def figures(entry: dict | None, comparison: dict) -> tuple[str, str, str, str]:
        if entry is None or "summary" not in entry:
            reason = entry["failed"] if entry else "not run"
            return reason, "", "", ""
        s = entry["summary"]
        return (f"{s['median_step_s']:.1f}", f"{s['completion_tokens_per_s']:.1f}",
                generation_figures(s, comparison, bounds), f"{s['peak_memory_mb']:,.0f}")

    for comparison in comparisons:
        w, r = comparison["workload"], comparison.get("ratios")
        trl_step, trl_rate, trl_generation, trl_peak = figures(comparison.get("trl"), comparison)
        ours_step, ours_rate, ours_generation, ours_peak = figures(comparison.get("ours"), comparison)
        speedup, memory_ratio = (f"{r['speedup']:.2f}x", f"{r['memory_ratio']:.2f}") if r else ("", "")
        lines.append(
            f"| {w['num_generations']} | {w['completion_length']} | {trl_step} | {ours_step} | {speedup} | {trl_rate} "
            f"| {ours_rate} | {trl_generation} | {ours_generation} | {trl_peak} | {ours_peak} | {memory_ratio} |"
        )
    return "\n".join(lines)


def other_cpu_note(comparisons: list[dict]) -> str:
    shares = [entry["other_processes_cpu_cores"] for c in comparisons for key in TRAINERS
              if "other_processes_cpu_cores" in (entry := c.get(key, {}))]
    return f"Other processes' CPU use while the trainers ran: {min(shares):.2f} to {max(shares):.2f} cores." if shares else ""


def markdown(record: dict) -> str:
    machine = record["machine"]
    load = ", ".join(f"{a:.2f}" for a in record["load_average_before"])
    lines = [
        f"Run {record['created']} on {machine['cpu']} ({machine['cores']} cores, {machine['memory_gb']:.0f} GB), "
        f"device {machine.get('device', 'unknown')}, {machine.get('torch_threads', '?')} torch threads; "
        f"load average before the run: {load}. {other_cpu_note(record['comparisons'])}",
        f"Command: `{record['command']}`",
        "",
    ]
    bounds = machine.get("matmul_bound_gflops")
    if bounds:
        lines += ["This machine's matrix-multiply bound, measured before the run: "
                  + ", ".join(f"{precision} {gflops:.0f} GFLOP/s" for precision, gflops in bounds.items())
                  + ". Both trainers generate in the model's dtype here.", ""]
    if len(record["comparisons"]) > 1:
        first = record["comparisons"][0]["workload"]
        lines += [
            f"{first['warmup_steps']} warm-up + {first['steps']} measured step(s) per row, one Wordle prompt per step.",
            "",
            scaling_table(record["comparisons"], bounds),
        ]
    else:
        for comparison in record["comparisons"]:
            w = comparison["workload"]
            lines += [
                f"**{w['num_generations']} completions of at most {w['completion_length']} tokens per step**, "
                f"one Wordle prompt per step; {w['steps']} measured steps after {w['warmup_steps']} warm-up.",
                "",
                comparison_table(comparison, bounds),
                "",
            ]
    return "\n".join(lines).rstrip() + "\n"
