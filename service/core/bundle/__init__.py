"""The model bundle contract: the manifest, and the image preprocessing and tokenization it
declares. The encoder serves a bundle with these, and ``models/`` builds and checks bundles with the
very same code, so an exported model and the served one see identical tensors."""
