"""Stubs generated from the protos in ``service/rpc/`` (``encoder.proto``, ``search.proto``) by
``scripts/gen_protos.py`` (do not edit them; ``make protos`` regenerates, ``make protos-check``
fails when they are stale)."""
