"""Wordle, the flagship example: the game and solver, the course prompt and rewards, data, play, evaluation."""
