"""Benchmark-only processes, driven by `genq bench` (producers/bench.py) as subprocesses.

Nothing in the product path imports this package: the engine-limit runner and the naive
Celery baseline exist to be measured against, not to serve."""
