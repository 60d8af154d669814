"""The indexer: plain pipeline functions, run by Celery tasks or by the in-process job runner."""
