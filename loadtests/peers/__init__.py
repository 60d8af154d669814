"""clipsearch beside its peers (issue 16): infinity-emb in its own venv (``setup.sh``), the same
locust embeddings profile against both servers in one run, and each server's own ONNX Runtime
ceiling (``compare.py``; ``make loadtest-peers``)."""
