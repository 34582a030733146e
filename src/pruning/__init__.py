"""Prune-and-retrain experiments (seed 004): methods, keep ratios, cells, collector, report."""
