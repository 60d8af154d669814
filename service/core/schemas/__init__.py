"""Request and response shapes of the public API: search, items and jobs (``api``), ingestion
sources (``sources``), admin and collections (``admin``), OpenAI-shaped embeddings (``openai``)."""
