"""Multi-turn environments: the user's environment class run per episode in a worker (runtime), and
episodes played between it and the policy (episodes, which needs torch)."""
