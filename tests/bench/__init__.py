"""Benchmarks: run by hand as scripts (`.venv/bin/python tests/bench/bench_run.py`), never collected by pytest."""
