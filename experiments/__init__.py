"""Experiment entry points: train, sample, evaluate, and the bake-off (the main job)."""
