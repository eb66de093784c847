"""Execution: the Celery worker app, the GPU consumer, the engine bridge to vLLM."""
