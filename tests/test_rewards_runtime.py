"""RewardRuntime: scoring in a worker process, and every way reward code can misbehave."""

import math
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from rft.rewards import LIBRARY, RewardCodeError, RewardRuntime, preview

WORKER_PID = '''
def worker_pid(prompt, completion, example):
    import os
    return os.getpid()
'''


def code(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def batch(*completions: str, **columns: list) -> tuple[list[str], list[str], list[dict]]:
    prompts = [f"prompt {index}" for index in range(len(completions))]
    examples = [{name: values[index] for name, values in columns.items()} for index in range(len(completions))]
    return prompts, list(completions), examples


def same_scores(actual: list[float], expected: list[float]) -> bool:
    return len(actual) == len(expected) and all(
        (math.isnan(a) and math.isnan(e)) or a == e for a, e in zip(actual, expected, strict=True)
    )


def test_both_conventions_are_scored_and_weighted_into_the_total():
    source = code('''
        def length(prompt, completion, example):
            return len(completion)

        def matches(prompts, completions, answer):
            return [1.0 if c == a else 0.0 for c, a in zip(completions, answer)]
    ''')
    with RewardRuntime(source, weights={"length": 0.5, "matches": 2.0}) as runtime:
        result = runtime.score(*batch("ab", "abcd", "x", answer=["ab", "no", "x"]))

    assert runtime.function_names == ["length", "matches"]
    assert result.per_function == {"length": [2.0, 4.0, 1.0], "matches": [1.0, 0.0, 1.0]}
    assert result.total == [0.5 * 2 + 2.0 * 1, 0.5 * 4 + 0.0, 0.5 * 1 + 2.0 * 1]
    assert result.errors == {} and result.not_applicable == {} and result.row_errors == ["", "", ""]
    assert result.seconds > 0


def test_dataset_columns_reach_both_conventions():
    source = code('''
        def per_sample(prompt, completion, example):
            return example["difficulty"] * 10 + int(prompt.split()[-1])

        def named_column(prompts, completions, difficulty):
            return [float(d) for d in difficulty]

        def any_column(completions, **kwargs):
            assert sorted(kwargs) == ["difficulty", "prompts", "tag"], sorted(kwargs)
            return [float(tag == "b") for tag in kwargs["tag"]]
    ''')
    with RewardRuntime(source) as runtime:
        result = runtime.score(*batch("x", "y", "z", difficulty=[1, 2, 3], tag=["a", "b", "c"]))

    assert result.errors == {}
    assert result.per_function == {
        "per_sample": [10.0, 21.0, 32.0],
        "named_column": [1.0, 2.0, 3.0],
        "any_column": [0.0, 1.0, 0.0],
    }


def test_user_code_never_runs_in_the_calling_process(tmp_path):
    pid_file = tmp_path / "pid"
    source = code(f'''
        def records_pid(prompt, completion, example):
            import os
            with open({str(pid_file)!r}, "w") as f:
                f.write(str(os.getpid()))
            return 1.0
    ''')
    with RewardRuntime(source) as runtime:
        assert runtime.score(*batch("x")).per_function == {"records_pid": [1.0]}

    assert int(pid_file.read_text()) != os.getpid()


def test_an_exception_is_recorded_and_the_other_functions_still_score():
    source = code('''
        def divides(prompt, completion, example):
            return 1 / len(completion)

        def steady(prompt, completion, example):
            return 1.0
    ''')
    with RewardRuntime(source) as runtime:
        result = runtime.score(*batch("ab", "", "abcd"))
        again = runtime.score(*batch("a"))

    assert same_scores(result.per_function["divides"], [0.5, math.nan, 0.25])
    assert result.per_function["steady"] == [1.0, 1.0, 1.0]
    assert result.total == [1.5, 1.0, 1.25]
    assert result.errors["divides"].count == 1
    message = result.errors["divides"].first_message
    assert message.startswith("completion 1: Traceback")
    assert 'File "<reward code>", line 2, in divides' in message
    assert "return 1 / len(completion)" in message
    assert message.endswith("ZeroDivisionError: division by zero")
    assert result.row_errors == ["", "divides: ZeroDivisionError: division by zero", ""]
    assert again.per_function == {"divides": [1.0], "steady": [1.0]}


def test_a_call_that_hangs_times_out_and_a_new_worker_scores_the_rest():
    source = WORKER_PID + code('''
        def hangs_on_loop(prompt, completion, example):
            while completion == "loop":
                pass
            return 1.0
    ''')
    with RewardRuntime(source, timeout_s=1) as runtime:
        result = runtime.score(*batch("ok", "loop", "ok"))
        again = runtime.score(*batch("ok"))

    assert same_scores(result.per_function["hangs_on_loop"], [1.0, math.nan, 1.0])
    assert result.errors["hangs_on_loop"].count == 1
    assert result.errors["hangs_on_loop"].first_message == (
        "completion 1: running hangs_on_loop timed out after 1 s; a new worker took over"
    )
    assert again.errors == {} and again.per_function["hangs_on_loop"] == [1.0]
    assert again.per_function["worker_pid"] != result.per_function["worker_pid"]


def test_a_batched_call_that_hangs_loses_the_whole_batch_only():
    source = code('''
        def hangs(prompts, completions):
            while True:
                pass

        def steady(prompts, completions):
            return [2.0] * len(completions)
    ''')
    with RewardRuntime(source, timeout_s=1) as runtime:
        result = runtime.score(*batch("a", "b"))

    assert same_scores(result.per_function["hangs"], [math.nan, math.nan])
    assert result.per_function["steady"] == [2.0, 2.0]
    assert result.total == [2.0, 2.0]
    assert result.errors["hangs"].count == 2
    assert result.errors["hangs"].first_message == "running hangs timed out after 1 s; a new worker took over"


@pytest.mark.parametrize(("body", "expected_problem"), [
    ("import os; os._exit(3)", "the worker process died while running exits (exit code 3)"),
    ("import ctypes; ctypes.string_at(0)", "the worker process died while running exits (killed by SIGSEGV)"),
])
def test_a_dying_worker_is_replaced(body, expected_problem):
    source = WORKER_PID + code(f'''
        def exits(prompt, completion, example):
            if completion == "die":
                {body}
            return 1.0
    ''')
    with RewardRuntime(source) as runtime:
        result = runtime.score(*batch("die", "live"))
        again = runtime.score(*batch("live"))

    assert same_scores(result.per_function["exits"], [math.nan, 1.0])
    assert result.errors["exits"].first_message == f"completion 0: {expected_problem}; a new worker took over"
    assert again.errors == {} and again.per_function["exits"] == [1.0]
    assert again.per_function["worker_pid"] != result.per_function["worker_pid"]


def test_sys_exit_fails_the_call_without_killing_the_worker():
    source = code('''
        def calls_exit(prompt, completion, example):
            import sys
            sys.exit(2)
    ''') + WORKER_PID
    with RewardRuntime(source) as runtime:
        first = runtime.score(*batch("a"))
        second = runtime.score(*batch("a"))

    assert first.errors["calls_exit"].first_message.endswith("SystemExit: 2")
    assert first.per_function["worker_pid"] == second.per_function["worker_pid"]


def test_values_that_are_not_rewards_are_missing_and_recorded():
    source = code('''
        def per_sample(prompt, completion, example):
            return {"text": "three", "flag": True, "list": [1.0], "none": None, "nan": float("nan"),
                    "inf": float("inf"), "huge": 10 ** 400, "int": 3}[completion]
    ''')
    with RewardRuntime(source) as runtime:
        result = runtime.score(*batch("text", "flag", "list", "none", "nan", "inf", "huge", "int"))

    nan = math.nan
    assert same_scores(result.per_function["per_sample"], [nan, nan, nan, nan, nan, nan, nan, 3.0])
    assert result.total == [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 3.0]
    assert result.errors["per_sample"].count == 5
    assert result.errors["per_sample"].first_message == (
        "completion 0: returned str 'three'; a reward must be an int, a float or None"
    )
    assert result.not_applicable == {"per_sample": 2}
    assert result.row_errors[1] == (
        "per_sample: completion 1: returned bool True; a reward must be an int, a float or None"
    )
    assert result.row_errors[2].endswith("returned list [1.0]; a reward must be an int, a float or None")
    assert result.row_errors[3:5] == ["", ""]
    assert result.row_errors[5] == "per_sample: completion 5: returned inf; a reward must be finite"
    assert result.row_errors[6].endswith("; too large for a float")


def test_batched_results_must_be_lists_of_the_right_length():
    source = code('''
        def one_float(prompts, completions):
            return 1.0

        def too_short(prompts, completions):
            return [1.0]

        def one_bad_item(prompts, completions):
            return [0.5, "high", None]
    ''')
    with RewardRuntime(source) as runtime:
        result = runtime.score(*batch("a", "b", "c"))

    assert result.errors["one_float"].count == 3
    assert result.errors["one_float"].first_message == (
        "returned float 1.0; a batched reward function must return a list of 3 rewards, one per completion"
    )
    assert result.errors["too_short"].first_message == "returned a list of 1 rewards for 3 completions"
    assert same_scores(result.per_function["one_bad_item"], [0.5, math.nan, math.nan])
    assert result.errors["one_bad_item"].count == 1
    assert result.errors["one_bad_item"].first_message == (
        "completion 1: returned str 'high'; a reward must be an int, a float or None"
    )
    assert result.not_applicable == {"one_bad_item": 1}
    assert result.total == [0.5, 0.0, 0.0]


def test_prints_are_captured_per_function_and_bounded():
    source = code('''
        def chatty(prompt, completion, example):
            print("looking at", completion)
            return 1.0

        def flood(prompts, completions):
            import sys
            print("x" * 100_000)
            print("to stderr", file=sys.stderr)
            return [0.0] * len(completions)
    ''')
    with RewardRuntime(source) as runtime:
        result = runtime.score(*batch("a", "b"))

    logs = dict(result.logs)
    assert logs["chatty"] == "looking at a\nlooking at b\n"
    assert logs["flood"].startswith("x" * 1000)
    assert len(logs["flood"]) < 64 * 1024 + 100
    assert logs["flood"].endswith("[output truncated: 34475 more characters were printed]")


def test_signal_alarm_works_in_reward_code_and_stray_alarms_are_cancelled():
    source = code('''
        import signal

        class _TimeUp(Exception):
            pass

        def _time_up(signum, frame):
            raise _TimeUp

        def alarmed(prompt, completion, example):
            signal.signal(signal.SIGALRM, _time_up)
            signal.alarm(1)
            try:
                while True:
                    pass
            except _TimeUp:
                return 0.5

        def forgets_alarm(prompt, completion, example):
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            signal.alarm(1)
            return 1.0
    ''') + WORKER_PID
    with RewardRuntime(source, timeout_s=5) as runtime:
        first = runtime.score(*batch("a"))
        time.sleep(1.5)  # the forgotten alarm would have killed the worker by now
        second = runtime.score(*batch("a"))

    assert first.errors == {} and second.errors == {}
    assert first.per_function["alarmed"] == [0.5]
    assert first.per_function["worker_pid"] == second.per_function["worker_pid"]


def test_a_runaway_allocation_raises_memory_error_inside_the_worker():
    source = code('''
        def hoards(prompt, completion, example):
            block = bytearray(8 * 1024 ** 3)
            return 1.0
    ''') + WORKER_PID
    with RewardRuntime(source, memory_limit_mb=512) as runtime:
        first = runtime.score(*batch("a"))
        second = runtime.score(*batch("a"))

    assert first.errors["hoards"].first_message.endswith("MemoryError")
    assert first.per_function["worker_pid"] == second.per_function["worker_pid"]


def test_library_functions_run_from_their_source_alone():
    with RewardRuntime("\n\n".join(LIBRARY.values())) as runtime:
        result = runtime.score(*batch("<think>2+2</think><answer>4</answer>", answer=["4"]), completion_ids=[[7] * 12])

    assert result.errors == {}
    assert result.per_function == {
        "format_check": [1.0], "exact_match": [1.0], "numeric_match": [1.0], "math_verified": [1.0],
        "length_penalty": [0.0], "repetition_penalty": [0.0], "soft_overlong_punishment": [0.0],
    }


def test_unusable_code_or_weights_fail_at_construction():
    with pytest.raises(RewardCodeError, match="line 1: running the code failed: ModuleNotFoundError"):
        RewardRuntime("import nonexistent_mod\ndef reward(prompt, completion, example):\n    return 1.0\n")
    with pytest.raises(RewardCodeError, match="syntax error"):
        RewardRuntime("def reward(:\n")
    with pytest.raises(RewardCodeError, match="weights name no reward function: typo"):
        RewardRuntime("def reward(prompt, completion, example):\n    return 1.0\n", weights={"typo": 2.0})


def test_score_checks_its_inputs_and_accepts_an_empty_batch():
    source = "def per_sample(prompt, completion, example):\n    return 1.0\n\n" \
             "def batched(prompts, completions):\n    return [1.0] * len(completions)\n"
    with RewardRuntime(source) as runtime:
        with pytest.raises(ValueError, match="as many prompts"):
            runtime.score(["p"], ["a", "b"], [{}, {}])
        empty = runtime.score([], [], [])

    assert empty.per_function == {"per_sample": [], "batched": []}
    assert empty.total == []


def test_preview_scores_sample_completions_as_a_table():
    source = code('''
        def length(prompt, completion, example):
            """Characters in the completion."""
            return len(completion)

        def fails(prompt, completion, example):
            raise ValueError("no answer found")
    ''')
    checked, result = preview(source, *batch("abc", "de"), weights={"length": 2.0})

    assert checked.ok and [f.summary for f in checked.functions] == ["Characters in the completion.", ""]
    table = result.to_dataframe()
    assert list(table.columns) == ["length", "fails", "total", "error"]
    assert table["length"].tolist() == [3.0, 2.0]
    assert table["fails"].isna().all()
    assert table["total"].tolist() == [6.0, 4.0]
    assert table["error"].tolist() == ["fails: ValueError: no answer found"] * 2


def test_preview_reports_unusable_code_without_scores():
    checked, result = preview("import nonexistent_mod\ndef reward(prompt, completion, example):\n    return 1\n",
                              *batch("a"))

    assert result is None
    assert [f.name for f in checked.functions] == ["reward"]
    assert "No module named 'nonexistent_mod'" in checked.message()


def test_the_worker_exits_when_the_trainer_is_killed(tmp_path):
    pid_file = tmp_path / "worker.pid"
    trainer_script = code(f'''
        from rft.rewards import RewardRuntime
        source = """
        def spins(prompt, completion, example):
            import os
            with open({str(pid_file)!r}, "w") as f:
                f.write(str(os.getpid()))
            while True:
                pass
        """
        RewardRuntime(source, timeout_s=60).score(["p"], ["c"], [{{}}])
    ''')
    root = Path(__file__).resolve().parents[1]
    trainer = subprocess.Popen([sys.executable, "-c", trainer_script], env={**os.environ, "PYTHONPATH": str(root)})
    try:
        worker_pid = wait_for_pid(pid_file)
    finally:
        trainer.kill()
        trainer.wait()

    deadline = time.monotonic() + 10
    while is_running(worker_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not is_running(worker_pid)


def wait_for_pid(pid_file: Path) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if pid_file.exists() and pid_file.read_text():
            return int(pid_file.read_text())
        time.sleep(0.05)
    raise AssertionError("the reward function never started")


def is_running(pid: int) -> bool:
    """Alive and not a zombie (the worker's new parent may never reap it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "\nState:\tZ" in status.read_text())
