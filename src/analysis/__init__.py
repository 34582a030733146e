"""The analysis layer: run directories in, tables and figures out.

It reads the run-directory contract (src/run_log.py) and nothing of the engine.
"""
