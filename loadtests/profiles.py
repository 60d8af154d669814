"""The load-test profiles: which locust user classes (``loadtests/locustfile.py``), how many users,
how fast they arrive and for how long. ``make loadtest PROFILE=name`` runs one."""

from __future__ import annotations

from dataclasses import dataclass

ALL_USERS = (
    "TextSearchUser",
    "ImageSearchUser",
    "EmbeddingsUser",
    "ItemReadUser",
    "BulkIngestUser",
)


@dataclass(frozen=True)
class Profile:
    name: str
    user_classes: tuple[str, ...]
    users: int
    spawn_rate: float
    run_time: str  # locust's format: 20s, 5m, 1h30m
    about: str


PROFILES = {
    p.name: p
    for p in (
        Profile(
            "smoke",
            ALL_USERS,
            users=8,
            spawn_rate=8,
            run_time="20s",
            about="every scenario at once for 20 s; any failed request fails it (`make test`)",
        ),
        Profile(
            "mixed",
            ALL_USERS,
            users=32,
            spawn_rate=4,
            run_time="3m",
            about="every scenario, 32 users: text and image search, embeddings, item reads, "
            "and one user ingesting throughout",
        ),
        Profile(
            "soak",
            ALL_USERS,
            users=32,
            spawn_rate=4,
            run_time="10m",
            about="the mixed profile for 10 minutes (issue 16's memory target: RSS flat)",
        ),
        Profile(
            "search",
            ("TextSearchUser",),
            users=16,
            spawn_rate=16,
            run_time="60s",
            about="16 closed-loop clients, text queries in mixed modes",
        ),
        Profile(
            "image",
            ("ImageSearchUser",),
            users=8,
            spawn_rate=8,
            run_time="60s",
            about="8 closed-loop clients uploading images to /v1/search/image",
        ),
        Profile(
            "embeddings",
            ("SingleEmbeddingUser",),
            users=16,
            spawn_rate=16,
            run_time="60s",
            about="16 closed-loop clients, one sentence per /v1/embeddings request "
            "(the peer comparison's profile)",
        ),
        Profile(
            "embeddings-batched",
            ("EmbeddingsUser",),
            users=16,
            spawn_rate=16,
            run_time="60s",
            about="16 clients, single sentences and batches of $LOADTEST_EMBED_BATCH (16)",
        ),
        Profile(
            "ingest",
            ("TextSearchUser", "BulkIngestUser"),
            users=17,
            spawn_rate=17,
            run_time="2m",
            about="16 text searchers while one user ingests batches of text documents",
        ),
        Profile(
            "tenants",
            ("TenantBurstUser", "TenantUser"),
            users=10,
            spawn_rate=10,
            run_time="20s",
            about="per-key rate limits: 8 users of one key search its collection closed loop (429s "
            "expected) while 2 users of another key search theirs once a second (none may fail); "
            "keys and collections from $LOADTEST_BURST_KEY/_COLLECTION, "
            "$LOADTEST_TENANT_KEY/_COLLECTION",
        ),
    )
}
