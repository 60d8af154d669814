"""clipsearch: multimodal search service."""
