"""The Play Wordle tab: play against a checkpoint on the same secret (Versus), or watch it play (Watch)."""

from __future__ import annotations

import html
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from rft.background import Cancelled, Done, Progress, StopRequests, run_reporting
from rft.jobs import threads_beside_jobs
from rft.policies import resolve_policy, trained_in_environment
from rft.tasks.wordle.game import CORRECT, MAX_GUESSES, PRESENT, WORD_LENGTH, parse_feedback
from rft.tasks.wordle.play import GameResult, Turn, play_conversation_turn, play_turn
from rft.tasks.wordle.versus import MODEL, NOBODY, PERSON, TIE, InvalidGuess, VersusGame, normalise_word, random_secret, reasoning
from ui.common import notice, stop_button
from ui.policy_picker import LOADED_POLICIES, POLICY_FAILURES, policy_picker_update

DEFAULT_MAX_NEW_TOKENS = 192
OUTCOMES = {
    PERSON: "You win: you solved it in fewer guesses.",
    MODEL: "The model wins: it solved it in fewer guesses.",
    TIE: "A tie: you both solved it in the same number of guesses.",
    NOBODY: "Nobody solved it.",
}


@dataclass
class PlayTab:
    on_load: tuple[Callable, list, list]


def build(runs_root: Path) -> PlayTab:
    with gr.Row(equal_height=True, elem_classes="toolbar"):
        policy = gr.Dropdown([], label="Checkpoint (any run, any step, or a base model)", scale=4,
                             elem_id="play-policy")
        max_tokens = gr.Number(DEFAULT_MAX_NEW_TOKENS, label="Max new tokens per turn", precision=0, minimum=1,
                               maximum=4096, scale=1, elem_id="play-max-tokens")
        refresh = gr.Button("↻ Refresh", size="sm", scale=0, min_width=90)
    with gr.Tabs():
        with gr.Tab("Versus", id="versus"):
            with gr.Row(equal_height=True, elem_classes="toolbar"):
                secret = gr.Textbox(label="Secret (optional; leave empty for a random held-out word)", type="password",
                                    scale=3, elem_id="versus-secret",
                                    info="A second person can type it here; it stays hidden")
                new_game = gr.Button("New game", variant="primary", elem_id="versus-new")
            versus_message = gr.HTML(elem_id="versus-message")
            with gr.Row(equal_height=False):
                with gr.Column():
                    gr.Markdown("**Your board**")
                    person_board = gr.HTML(board_html([]), elem_id="versus-person-board")
                    with gr.Row(equal_height=True, elem_classes="toolbar"):
                        guess = gr.Textbox(label="Your guess", max_lines=1, scale=3, elem_id="versus-guess")
                        submit = gr.Button("Guess", elem_id="versus-submit")
                with gr.Column():
                    gr.Markdown("**The checkpoint's board**")
                    model_board = gr.HTML(board_html([]), elem_id="versus-model-board")
                    model_thoughts = gr.HTML(elem_id="versus-reasoning")
            game_state = gr.State(None)
        with gr.Tab("Watch", id="watch"):
            with gr.Row(equal_height=True, elem_classes="toolbar"):
                watch_secret = gr.Textbox(label="Secret for the checkpoint (optional; leave empty for a random "
                                                "held-out word)", max_lines=1, scale=3, elem_id="watch-secret")
                watch = gr.Button("Play", variant="primary", elem_id="watch-play")
                stop_watch = gr.Button("Stop", elem_id="watch-stop", interactive=False, min_width=80, scale=0)
            watch_message = gr.HTML(elem_id="watch-message")
            watch_turns = gr.HTML(elem_id="watch-turns")

    def load_pickers(selected):
        return policy_picker_update(runs_root, selected)

    def start_game(typed_secret):
        try:
            game = VersusGame(typed_secret if typed_secret and typed_secret.strip() else random_secret())
        except InvalidGuess as exc:
            return None, notice(str(exc), "warn"), board_html([]), board_html([]), "", gr.update()
        where = "the secret typed in" if typed_secret and typed_secret.strip() else "a random held-out word"
        return (game, notice(f"New game on {where}. Type your first guess.", "info"), board_html([]), board_html([]),
                "", gr.update(value=""))

    def take_turn(game: VersusGame | None, text, policy_key, max_new):
        if game is None:
            yield game, notice("Start a new game first.", "warn"), gr.skip(), gr.skip(), gr.skip(), gr.skip()
            return
        if game.over:
            yield game, versus_status(game), gr.skip(), gr.skip(), gr.skip(), gr.skip()
            return
        if not game.person_done:
            try:
                game.play_person(text)
            except InvalidGuess as exc:
                yield game, notice(str(exc), "warn"), gr.skip(), gr.skip(), gr.skip(), gr.skip()
                return
        yield game, notice("The checkpoint is thinking…"), *versus_outputs(game), ""
        while game.model_to_play:
            try:
                policy_choice = resolve_policy(runs_root, policy_key)
                as_conversation = trained_in_environment(runs_root, policy_key)
                for update in model_turn(policy_choice, game.model, max_new, as_conversation):
                    if isinstance(update, Done):
                        game.record_model_turn(update.result)
                    else:
                        yield game, notice(f"The checkpoint is thinking… {update.text}"), gr.skip(), gr.skip(), \
                            gr.skip(), gr.skip()
            except POLICY_FAILURES as exc:
                yield game, notice(f"The checkpoint could not play: {exc}. Pick another and press Guess.", "error"), \
                    *versus_outputs(game), gr.skip()
                return
        yield game, versus_status(game), *versus_outputs(game), gr.skip()

    watch_stops = StopRequests()

    def model_turn(policy_choice, game: GameResult, max_new, as_conversation: bool, stop=None):
        """The policy's next turn in `game`, in the background: progress, then Done(turn). A policy
        trained on whole games continues the game as one conversation, as its run trained; others
        get the course's prompt with the guesses so far. Setting `stop` (the Stop button) or closing
        this generator (the page closed) stops the generation within a token."""
        def work(report):
            report(f"loading {policy_choice.label}")
            model, tokenizer = LOADED_POLICIES.load(policy_choice)
            report("writing its answer" + (" in the game's conversation" if as_conversation else ""))
            with threads_beside_jobs(runs_root):
                if as_conversation:
                    return play_conversation_turn(model, tokenizer, game, max_new_tokens=clamp_tokens(max_new))
                return play_turn(model, tokenizer, game.secret, game.history, max_new_tokens=clamp_tokens(max_new))

        started = time.monotonic()
        for update in run_reporting(work, stop=stop):
            yield update if isinstance(update, Done) else Progress(f"{update.text} · {time.monotonic() - started:.0f} s")

    def watch_game(typed_secret, policy_key, max_new, request: gr.Request):
        idle = gr.update(interactive=False)
        stop = watch_stops.start(request.session_hash)
        try:
            secret_word = normalise_word(typed_secret, "secret") if typed_secret and typed_secret.strip() \
                else random_secret()
            policy_choice = resolve_policy(runs_root, policy_key)
        except (InvalidGuess, *POLICY_FAILURES) as exc:
            yield notice(str(exc), "warn"), "", idle
            return
        game = GameResult(secret=secret_word)
        as_conversation = trained_in_environment(runs_root, policy_key)
        while game.num_guesses < MAX_GUESSES and not game.won:
            try:
                for update in model_turn(policy_choice, game, max_new, as_conversation, stop):
                    if isinstance(update, Done):
                        game.turns.append(update.result)
                    else:
                        yield (notice(f"{policy_choice.label}, turn {game.num_guesses + 1} of {MAX_GUESSES}: "
                                      f"{update.text}"), watch_html(game), gr.update(interactive=True))
            except Cancelled:
                yield notice("Stopped.", "info"), watch_html(game), idle
                return
            except POLICY_FAILURES as exc:
                yield notice(f"The checkpoint could not play: {exc}", "error"), watch_html(game), idle
                return
        outcome = f"Solved in {game.num_guesses}." if game.won else f"Not solved; the secret was {game.secret}."
        if as_conversation:
            outcome += " (played as one conversation, as its run trained)"
        yield notice(outcome, "ok" if game.won else "info"), watch_html(game), idle

    refresh.click(load_pickers, policy, policy)
    new_game.click(start_game, secret, [game_state, versus_message, person_board, model_board, model_thoughts, secret])
    turn_outputs = [game_state, versus_message, person_board, model_board, model_thoughts, guess]
    submit.click(take_turn, [game_state, guess, policy, max_tokens], turn_outputs)
    guess.submit(take_turn, [game_state, guess, policy, max_tokens], turn_outputs)
    watch.click(watch_game, [watch_secret, policy, max_tokens], [watch_message, watch_turns, stop_watch])
    stop_watch.click(stop_button(watch_stops), None, stop_watch)
    return PlayTab(on_load=(load_pickers, [policy], [policy]))


def clamp_tokens(value) -> int:
    return max(1, min(4096, int(value or DEFAULT_MAX_NEW_TOKENS)))


def versus_outputs(game: VersusGame) -> tuple[str, str, str]:
    model_rows = [(turn.guess, turn.feedback) for turn in game.model.turns]
    return board_html(game.person), board_html(model_rows), reasoning_html(game.model.turns)


def versus_status(game: VersusGame) -> str:
    if game.over:
        return notice(f"{OUTCOMES[game.winner]} The secret was {game.secret}. Press New game to play again.", "ok")
    return notice(f"Turn {len(game.person) + 1} of {MAX_GUESSES}: your guess.", "info")


# ---- rendering ---------------------------------------------------------------------------------------

TILE_CLASSES = {CORRECT: "tile-correct", PRESENT: "tile-present"}


def board_html(rows: list[tuple[str | None, str | None]]) -> str:
    """Six rows of five tiles: played guesses coloured by their feedback, an invalid guess struck
    through and marked, the remaining rows empty."""
    lines = [row_html(guess, result) for guess, result in rows]
    lines += ['<div class="board-row">' + '<span class="tile tile-empty"></span>' * WORD_LENGTH + "</div>"] * (
        MAX_GUESSES - len(rows))
    return f'<div class="wordle-board">{"".join(lines)}</div>'


def row_html(guess: str | None, result: str | None) -> str:
    if result is None:
        shown = html.escape(guess) if guess else "(no guess)"
        return f'<div class="board-row board-invalid"><span class="invalid-guess">{shown}</span> invalid</div>'
    letters, symbols = parse_feedback(result)
    tiles = "".join(f'<span class="tile {TILE_CLASSES.get(symbol, "tile-absent")}">{letter}</span>'
                    for letter, symbol in zip(letters, symbols))
    return f'<div class="board-row">{tiles}</div>'


def reasoning_html(turns: list[Turn]) -> str:
    """Each model turn's <think> text, folded."""
    parts = []
    for number, turn in enumerate(turns, start=1):
        guess = html.escape(turn.guess or "no guess")
        parts.append(f'<details class="turn-reasoning"><summary>Turn {number}: {guess} · reasoning</summary>'
                     f'<pre>{html.escape(reasoning(turn.completion)) or "(empty)"}</pre></details>')
    return "".join(parts)


def watch_html(game: GameResult) -> str:
    """Every turn: its board row, guess, feedback, rewards, and folded prompt and reasoning."""
    cards = []
    for number, turn in enumerate(game.turns, start=1):
        rewards = " · ".join(f"{html.escape(name)} {value:.2f}" for name, value in turn.rewards.items())
        result = html.escape(turn.feedback) if turn.feedback else "invalid guess: the turn is used up"
        cards.append(
            f'<div class="watch-turn"><div class="watch-head">Turn {number}: <b>{html.escape(turn.guess or "no guess")}</b>'
            f" → {result}</div>{row_html(turn.guess, turn.feedback)}"
            f'<div class="card-scores">{rewards}</div>'
            f'<details><summary>Prompt</summary><pre>{html.escape(turn.prompt_text)}</pre></details>'
            f'<details open><summary>Reasoning</summary><pre>{html.escape(reasoning(turn.completion)) or "(empty)"}</pre>'
            f"</details></div>"
        )
    return "".join(cards)
