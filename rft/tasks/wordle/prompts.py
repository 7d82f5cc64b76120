"""The course's Wordle prompt: system prompt, user message with past feedback, pre-filled answer start."""

from __future__ import annotations

from collections.abc import Sequence

SYSTEM_PROMPT = """You are playing Wordle, a word-guessing game.

### Game Rules:
- You have **6 tries** to guess a secret **5-letter** word.
- Each guess must be a valid **5-letter English word**.
- After each guess, you will receive feedback indicating how close your guess was.

### Feedback Format:
Each letter in your guess will receive one of three symbols:
1. ✓ : The letter is in the word and in the CORRECT position.
2. - : The letter is in the word but in the WRONG position.
3. x : The letter is NOT in the word.

### Example:
Secret Word: BRISK

Guess 1: STORM → Feedback: S(-) T(x) O(x) R(-) M(x)
Guess 2: BRAVE → Feedback: B(✓) R(✓) A(x) V(x) E(x)
Guess 3: BRISK → Feedback: B(✓) R(✓) I(✓) S(✓) K(✓)

### Response Format:
Think through the problem and feedback step by step. Make sure to first add your step by step \
thought process within <think> </think> tags. Then, return your guessed word in the following \
format: <guess> guessed-word </guess>."""

# The model continues this message, so every completion starts inside the <think> block.
ASSISTANT_PREFIX = "Let me solve this step by step.\n<think>"


def user_message(past_guess_history: Sequence[Sequence[str]]) -> str:
    """The turn's request, followed by one `Guess i: WORD → Feedback: ...` line per past guess."""
    message = "Make a new 5-letter word guess."
    if past_guess_history:
        message += "\n\nHere is some previous feedback:"
        for number, (guess, feedback) in enumerate(past_guess_history, start=1):
            message += f"\nGuess {number}: {guess} → Feedback: {feedback}"
    return message


def build_messages(past_guess_history: Sequence[Sequence[str]]) -> list[dict]:
    """[system, user, assistant prefix]: chat messages whose last message the model continues.

    `past_guess_history` holds (guess, rendered feedback) pairs, oldest first.
    """
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": user_message(past_guess_history)},
        {"role": "assistant", "content": ASSISTANT_PREFIX},
    ]
