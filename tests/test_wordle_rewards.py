"""The course's three Wordle reward functions, branch by branch, on hand-worked cases."""

import ast
import math
import sys
import types

import pytest

from rft.rewards.analysis import analyse_source
from rft.tasks.wordle import reward_source
from rft.tasks.wordle.rewards import fits_feedback, guess_value, output_format_check, uses_previous_feedback

BRISK_HISTORY = str([["STORM", "S(-) T(x) O(x) R(-) M(x)"], ["BRAVE", "B(✓) R(✓) A(x) V(x) E(x)"]])


@pytest.fixture
def word_list(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text("CRANE\nCRATE\nGRATE\nIRATE\nBRISK\n", encoding="utf-8")
    return str(path)


def example(word_list, history="[]", secret="CRANE"):
    return {"secret": secret, "past_guess_history": history, "word_list": word_list}


def answer(guess, thinking=" Vowels first.") -> str:
    """A completion in the course's format (the "<think>" itself is pre-filled in the prompt)."""
    return f"{thinking}</think>\n<guess> {guess} </guess>"


# output_format_check

def test_format_well_formed_answer_with_an_allowed_word_scores_1(word_list):
    assert output_format_check("", answer("CRANE"), example(word_list)) == 1.0
    assert output_format_check("", answer("crane"), example(word_list)) == 1.0  # read as CRANE, as the game does


@pytest.mark.parametrize(
    "completion",
    [
        "no tags at all",
        " Vowels first.</think><guess>CRANE</guess>",  # no newline between the blocks
        " Vowels first.</think>\n\n<guess>CRANE</guess>",  # two newlines
        " Vowels first.</think>\n<guess>CRANE</guess> good luck",  # text after the guess
        " Vowels <think> again</think>\n<guess>CRANE</guess>",  # a second <think>
        " Vowels first.</think>\n<guess>CRANE",  # unclosed guess
    ],
)
def test_format_malformed_text_scores_0(word_list, completion):
    assert output_format_check("", completion, example(word_list)) == 0.0


def test_format_guess_of_the_wrong_length_scores_0_1(word_list):
    assert output_format_check("", answer("CRANES"), example(word_list)) == 0.1
    assert output_format_check("", answer(""), example(word_list)) == 0.1


def test_format_five_letters_not_in_the_word_list_scores_0_5(word_list):
    assert output_format_check("", answer("ZZZZZ"), example(word_list)) == 0.5


def test_format_any_exception_scores_0(word_list):
    assert output_format_check("", answer("CRANE"), {"secret": "CRANE"}) == 0.0  # no word_list column
    assert output_format_check("", answer("CRANE"), example(word_list + ".missing")) == 0.0
    assert output_format_check("", None, example(word_list)) == 0.0


# uses_previous_feedback: after STORM and BRAVE against BRISK, B and R are known at 0 and 1,
# S is known present but not at 0, R not at 3, and T, O, M, A, V, E are absent.

def test_feedback_use_scores_each_rule(word_list):
    # S at a known-wrong position -0.2, R kept at ✓ +0.2, R moved to a new position +0.1,
    # T absent -0.5, K unexplored +0.05.
    score = uses_previous_feedback("", answer("SRRTK"), example(word_list, BRISK_HISTORY, "BRISK"))
    assert score == pytest.approx(-0.2 + 0.2 + 0.1 - 0.5 + 0.05)


def test_feedback_use_of_the_secret_itself(word_list):
    # B, R kept +0.2 each; I and K unexplored +0.05 each; S moved to a new position +0.1.
    assert uses_previous_feedback("", answer("BRISK"), example(word_list, BRISK_HISTORY)) == pytest.approx(0.6)


def test_feedback_use_range_is_minus_2_5_to_1(word_list):
    assert uses_previous_feedback("", answer("TOMAV"), example(word_list, BRISK_HISTORY)) == pytest.approx(-2.5)
    solved = str([["BRISK", "B(✓) R(✓) I(✓) S(✓) K(✓)"]])
    assert uses_previous_feedback("", answer("BRISK"), example(word_list, solved)) == pytest.approx(1.0)


def test_feedback_use_letter_marked_absent_beside_its_exact_copy(word_list):
    # EERIE against CRANE: E(x) E(x) R(-) I(x) E(✓). The secret has one E, already placed, so an
    # E anywhere else is known wrong; R at 0 is a new position.
    history = str([["EERIE", "E(x) E(x) R(-) I(x) E(✓)"]])
    assert uses_previous_feedback("", answer("EROSE"), example(word_list, history)) == pytest.approx(
        -0.5 + 0.1 + 0.05 + 0.05 + 0.2
    )


def test_feedback_use_without_history_scores_0_1(word_list):
    assert uses_previous_feedback("", answer("CRANE"), example(word_list)) == 0.1


def test_feedback_use_without_a_usable_guess_scores_0(word_list):
    assert uses_previous_feedback("", "no guess here", example(word_list, BRISK_HISTORY)) == 0.0
    assert uses_previous_feedback("", answer("BRISKY"), example(word_list, BRISK_HISTORY)) == 0.0
    assert uses_previous_feedback("", answer("BRISK"), example(word_list, "not a list")) == 0.0


# guess_value

def test_guess_value_is_the_fraction_of_uncertainty_removed(word_list):
    # No history: all 5 words are candidates, log2(5) bits. CRANE splits them into CRANE, CRATE,
    # BRISK alone and GRATE with IRATE (both x✓✓x✓): 2/5 * log2(2) = 0.4 bits remain on average.
    expected = (math.log2(5) - 0.4) / math.log2(5)
    assert guess_value("", answer("CRANE"), example(word_list)) == pytest.approx(expected)


def test_guess_value_counts_only_candidates_that_fit_the_history(word_list):
    # BRISK against CRANE leaves CRANE, CRATE and GRATE (IRATE would show I as present).
    # CRATE tells all three apart: log2(3) of log2(3) bits.
    history = str([["BRISK", "B(x) R(✓) I(x) S(x) K(x)"]])
    assert guess_value("", answer("CRATE"), example(word_list, history)) == pytest.approx(1.0)
    # GRATE tells them apart too: x✓✓x✓, x✓✓✓✓ and ✓✓✓✓✓.
    assert guess_value("", answer("GRATE"), example(word_list, history)) == pytest.approx(1.0)
    # BRISK gives the same feedback for all three: nothing learnt.
    assert guess_value("", answer("BRISK"), example(word_list, history)) == pytest.approx(0.0)


def test_guess_value_is_0_when_one_or_no_candidate_remains(word_list):
    only_crane = str([["GRATE", "G(x) R(✓) A(✓) T(x) E(✓)"]])
    assert guess_value("", answer("CRATE"), example(word_list, only_crane)) == 0.0
    impossible = str([["CRANE", "C(x) R(x) A(x) N(x) E(x)"]])
    assert guess_value("", answer("CRATE"), example(word_list, impossible)) == 0.0


def test_guess_value_is_0_for_an_unusable_guess(word_list):
    assert guess_value("", answer("ZZZZZ"), example(word_list)) == 0.0  # not in the word list
    assert guess_value("", answer("CRANES"), example(word_list)) == 0.0
    assert guess_value("", "no guess here", example(word_list)) == 0.0
    assert guess_value("", answer("CRANE"), example(word_list, "[['CRANE', 'garbage']]")) == 0.0


# fits_feedback: the reward-hack guard

def test_fits_feedback_pays_only_for_a_word_that_could_still_be_the_secret(word_list):
    # After STORM and BRAVE, BRISK is the only word of the list that fits; CRANE is allowed but ruled out.
    assert fits_feedback("", answer("BRISK"), example(word_list, BRISK_HISTORY, "BRISK")) == 1.0
    assert fits_feedback("", answer("CRANE"), example(word_list, BRISK_HISTORY, "BRISK")) == 0.0
    assert output_format_check("", answer("CRANE"), example(word_list, BRISK_HISTORY, "BRISK")) == 1.0  # the hack
    assert fits_feedback("", answer("CRANE"), example(word_list)) == 1.0  # first turn: any allowed word fits
    assert fits_feedback("", answer("ZZZZZ"), example(word_list)) == 0.0
    assert fits_feedback("", "no guess here", example(word_list)) == 0.0


def test_the_guarded_preset_weighs_the_guard_and_the_course_preset_only_logs_it():
    from rft.presets import preset_config

    assert preset_config("wordle").rewards.weights == {"fits_feedback": 0.0}
    guarded = preset_config("wordle-guarded")
    assert guarded.rewards.weights == {"fits_feedback": 1.0} and guarded.data.preset == "wordle"
    guarded.validate()


# The file as reward code

def test_reward_source_runs_standalone_and_defines_the_three_rewards_and_the_guard(word_list):
    source = reward_source()
    check = analyse_source(source)
    assert check.ok, check.message()
    assert check.function_names == ["output_format_check", "uses_previous_feedback", "guess_value", "fits_feedback"]

    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module.split(".")[0])
    assert imported <= sys.stdlib_module_names

    # As the reward worker runs it: a fresh module, no file, nothing from rft.
    module = types.ModuleType("user_rewards")
    exec(compile(source, "<reward code>", "exec"), module.__dict__)
    row = example(word_list, BRISK_HISTORY, "BRISK")
    for imported_function in (output_format_check, uses_previous_feedback, guess_value, fits_feedback):
        standalone_function = getattr(module, imported_function.__name__)
        assert standalone_function("", answer("BRISK"), row) == imported_function("", answer("BRISK"), row)
