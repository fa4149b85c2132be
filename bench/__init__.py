"""Benchmark harness for capella-deploy: run it with `python bench/run.py` (see bench/README.md)."""
