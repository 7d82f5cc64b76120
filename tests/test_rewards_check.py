"""check(): what the dashboard's code box reports before anything is scored."""

import os
import textwrap

from rft.rewards import LIBRARY, check


def code(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def test_both_calling_conventions_are_detected_and_private_helpers_skipped():
    result = check(code('''
        def per_sample(prompt, completion, example):
            """Rewards one completion.

            More detail that the summary leaves out.
            """
            return _helper(completion)

        def batched(prompts, completions, answer):
            return [1.0] * len(completions)

        def keywords_only(completions, **kwargs):
            return [0.0] * len(completions)

        def _helper(text):
            return float(len(text))
    '''))

    assert result.ok, result.message()
    assert [(f.name, f.convention) for f in result.functions] == [
        ("per_sample", "per_sample"), ("batched", "batched"), ("keywords_only", "batched"),
    ]
    assert result.functions[0].summary == "Rewards one completion."
    assert result.functions[1].parameters == ("prompts", "completions", "answer")
    assert result.functions[2].takes_any_keyword
    assert "3 reward functions found" in result.message()
    assert "per_sample (per-sample, line 1): Rewards one completion." in result.message()


def test_syntax_error_names_the_line_and_shows_it():
    result = check(code('''
        def fine(prompt, completion, example):
            return 1.0

        def broken(prompt, completion, example)
            return 0.0
    '''))

    assert not result.ok
    assert result.functions == []
    assert result.errors[0].startswith("line 4: syntax error")
    assert "def broken(prompt, completion, example)" in result.errors[0]


def test_compiler_errors_count_as_syntax_errors():
    result = check("def reward(prompt, completion, example):\n    return 1.0\nreturn 2\n")

    assert result.errors == ["line 3: syntax error: 'return' outside function\n    return 2\n    ^"]


def test_import_error_is_found_by_running_the_code_in_a_worker():
    result = check(code('''
        import math
        import nonexistent_mod

        def reward(prompt, completion, example):
            return 1.0
    '''))

    assert not result.ok
    assert [f.name for f in result.functions] == ["reward"]
    assert len(result.errors) == 1
    assert result.errors[0].startswith("line 2: running the code failed: ModuleNotFoundError")
    assert "nonexistent_mod" in result.errors[0]


def test_top_level_code_runs_in_another_process(tmp_path):
    pid_file = tmp_path / "pid"
    result = check(code(f'''
        import os
        with open({str(pid_file)!r}, "w") as f:
            f.write(str(os.getpid()))

        def reward(prompt, completion, example):
            return 1.0
    '''))

    assert result.ok, result.message()
    assert int(pid_file.read_text()) != os.getpid()


def test_top_level_code_that_never_finishes_times_out():
    result = check("while True:\n    pass\n\ndef reward(prompt, completion, example):\n    return 1.0\n", timeout_s=1)

    assert result.errors == ["running the code timed out after 1 s"]


def test_unusable_signatures_are_errors_that_say_what_is_expected():
    result = check(code('''
        def two_arguments(prompt, completion):
            return 1.0

        def star_args(*args):
            return 1.0

        async def asynchronous(prompt, completion, example):
            return 1.0

        def usable(prompt, completion, example):
            return 1.0
    '''))

    assert not result.ok
    assert [f.name for f in result.functions] == ["usable"]
    assert len(result.errors) == 3
    assert result.errors[0].startswith("line 1: def two_arguments(prompt, completion) has a signature")
    assert "fn(prompt, completion, example)" in result.errors[0]
    assert "fn(prompts, completions, **kwargs)" in result.errors[0]
    assert result.errors[1].startswith("line 4: def star_args(*args)")
    assert result.errors[2] == "line 7: asynchronous is async; reward functions must be plain functions"
    assert result.message().startswith("3 problems:\n- line 1: def two_arguments")


def test_code_without_a_public_function_is_an_error():
    result = check("THRESHOLD = 3\n\ndef _private(prompt, completion, example):\n    return 1.0\n")

    assert not result.ok
    assert result.errors[0].startswith("no reward function found")


def test_library_functions_are_documented_reward_functions():
    result = check("\n\n".join(LIBRARY.values()))

    assert result.ok, result.message()
    # per-sample, but for the one that counts the sampled tokens, which only batched functions receive
    assert [(f.name, f.convention) for f in result.functions] == [
        (name, "batched" if name == "soft_overlong_punishment" else "per_sample") for name in LIBRARY
    ]
    assert all(f.summary for f in result.functions)
