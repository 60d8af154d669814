"""From a source entry to points: the functions the in-process runner and the Celery tasks share."""
