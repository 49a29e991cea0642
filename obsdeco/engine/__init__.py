"""The optimisation engine (opt-in): response cache, model router, prompt experiments, scores."""
