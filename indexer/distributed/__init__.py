"""Distributed ingestion: Celery indexer workers fill a Redis points stream, a writer empties it
into the store and counts job progress."""
