"""Training of clipsearch's default CLIP variant (``python -m models.train``)."""
