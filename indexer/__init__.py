"""Everything that moves media into the store.

- ``sources``: what a job reads (folders, manifests, URLs), the allowed roots, URL fetching;
- ``pipeline``: entries to points (images, video segments, text documents), batching, thumbnails;
- ``jobs``: the two ``JobQueue`` implementations side by side (in-process, Celery), job records;
- ``distributed``: the Celery side: app, tasks, task bodies, points stream, progress, lookups,
  writer;
- ``reindex``: zero-downtime rebuild of a collection's next version.
"""
