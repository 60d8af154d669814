"""Training of clipsearch's scenes CLIP variant (``python -m models.train``)."""
