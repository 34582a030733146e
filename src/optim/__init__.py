"""Optimizers and learning-rate schedules, each reachable by one config name."""
