"""The analysis layer: run directories in, tables and figures out.

It reads the run-directory contract (src/lifecycle/record.py) and nothing of the engine.
"""
