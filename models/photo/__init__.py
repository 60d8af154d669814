"""The ``photo`` bundle: real photographs searched zero-shot in a sentence-embedding space.

A pretrained ImageNet EfficientNet-Lite names the classes it sees; ConSE turns those class
probabilities into a point in all-MiniLM-L6-v2's sentence space (the probability-weighted mean
of the classes' text embeddings), where text queries, captions and descriptions already live.
Built by ``python -m models.photo --out models/zoo/photo`` from PyPI packages and Debian's
WordNet; tuned on the dev set in :mod:`models.photo.dev`.
"""
