"""Items become points: validation, caption chunking and embedding on the lane the caller names.
Used by the gateway (``POST /v1/items``) and by every ingestion path in ``indexer``."""
