"""Celery task and queue names: the contract between who enqueues jobs and who runs them.

Plain strings in core, so the gateway sends tasks by name (``send_task``) without importing
``indexer`` or Celery's task registry.
"""

from __future__ import annotations

# The queue indexer workers consume; senders must name it (it is not Celery's default queue).
INDEX_QUEUE = "clipsearch.index"

# index_batch(job_id: str, collection: str, entries: list[dict], run: str | None = None): load,
# embed on the bulk lane and append the points to the collection's points stream. An entry is
# {"uri": local path or file:// URI, "id"?: stable source id, "caption"?, "description"?,
# "metadata"?}; its item id in job progress is "id" if given, else "uri". ``run`` names the job's
# attempt: a task of a cancelled job or of an older attempt does nothing.
INDEX_BATCH = "clipsearch.index_batch"

# plan_job(job_id: str, collection: str, source: dict, run: str | None = None): read the source
# (a SourceSpec as a dict) in the worker, set the job's total, count unreadable entries failed,
# and send index_batch tasks of broker.plan_batch_size entries (with the same run). Running it
# twice sends the same batches (harmless).
PLAN_JOB = "clipsearch.plan_job"
