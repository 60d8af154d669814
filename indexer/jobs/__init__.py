"""The ``JobQueue`` implementations, the in-process runner and the Celery queue, and their
records."""
