"""Settings: one object per process, built once at start-up and passed in.

Environment variables use the prefix ``CLIPSEARCH_`` and ``__`` for nesting
(``CLIPSEARCH_ENCODER__MAX_BATCH_SIZE``). Everything unset means the embedded default: the
encoder in-process, the store embedded under ``data_dir``, jobs on the in-process runner.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.core import keys as api_keys
from service.core.keys import ApiKey, Scope

Provider = Literal["auto", "tensorrt", "cuda", "cpu"]


def _csv(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (``redis://:secret@host`` names the host
    only): safe in an error message or a log line."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not sep or not at:
        return url
    user = userinfo.partition(":")[0]
    return f"{scheme}://{user + ':' if user else ''}***@{host}"


def _split_csv(value: object) -> object:
    return _csv(value) if isinstance(value, str) else value


class LaneSettings(BaseModel):
    """Scheduling limits of one lane of the dynamic batcher."""

    max_batch_size: int = Field(32, ge=1, le=4096, description="items per inference batch")
    # 0: a query never waits for company. Under load, batches still form from what arrived
    # while the previous batch ran (continuous batching); waiting only adds idle latency.
    max_wait_ms: float = Field(
        0.0, ge=0, le=10_000, description="longest an item waits for its batch to fill"
    )
    max_queue: int = Field(256, ge=1, description="items admitted and not finished; more = 429")


class BulkLaneSettings(LaneSettings):
    """Ingestion: bigger batches, a deep queue. Its own class so that setting one field from the
    environment keeps the others' bulk defaults."""

    max_batch_size: int = Field(64, ge=1, le=4096, description="items per inference batch")
    max_wait_ms: float = Field(
        10.0, ge=0, le=10_000, description="longest an item waits for its batch to fill"
    )
    max_queue: int = Field(2048, ge=1, description="items admitted and not finished; more = 429")


class EncoderSettings(BaseModel):
    endpoints: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="host:port of encoder workers; empty = in-process"
    )
    extra_bundles: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="CLIPSEARCH_ENCODER__EXTRA_BUNDLES: comma-separated zoo names or bundle "
        "folders served beside the default bundle (CLIPSEARCH_BUNDLE), each with its own lanes "
        "and metrics; a request picks one by name@version. Loaded by the in-process encoder and "
        "by `clipsearch worker` (whose repeated --bundle sets the default, then these); ignored "
        "by a gateway that uses remote workers, which learns their bundles from them",
    )
    provider: Provider = "auto"
    require_gpu: bool = False
    # Search queries: small batches, no waiting for company, a short queue.
    interactive: LaneSettings = Field(default_factory=LaneSettings)
    # Ingestion: bigger batches and a deep queue. While search traffic is about, the batcher
    # slices bulk work so that a query waits at most one slice behind it.
    bulk: BulkLaneSettings = Field(default_factory=BulkLaneSettings)
    bulk_slice_ms: float = Field(
        0.0,
        ge=0,
        description="the longest one bulk batch may hold the accelerator while search traffic "
        "is about; 0 = half the tower's learned single-item inference time",
    )
    interactive_quiet_s: float = Field(
        1.0, ge=0, description="no search query for this long: bulk batches grow to their maximum"
    )
    bulk_priority: Literal["normal", "low", "idle"] = Field(
        "idle",
        description="OS priority of bulk preprocessing threads: idle = Linux SCHED_IDLE (they "
        "use only CPU nothing else wants), low = nice 10",
    )
    bulk_sessions: bool = Field(
        True,
        description="on CPU, run bulk image inference on a second session of the image tower, "
        "made and run by one thread at bulk_priority (so are its ONNX Runtime worker threads): a "
        "search query's inference and request handling take the cores from an ingest instead "
        "of sharing them; costs a second copy of the image model in memory. Off, with "
        "bulk_priority normal, or on a GPU: one image session serves both lanes",
    )
    max_batch_tokens: int = Field(
        16_384, ge=1, description="token budget of a text batch (items x longest item)"
    )
    preprocess_threads: int = Field(
        0, ge=0, description="bulk decoding threads; 0 = CPUs - 1, between 1 and 4"
    )
    request_timeout_s: float = Field(
        30.0, gt=0, description="deadline of an embed call (in-process or over gRPC)"
    )
    retries: int = Field(2, ge=0, description="gRPC client: retries on UNAVAILABLE only")
    bulk_patience_s: float = Field(
        600.0,
        ge=0,
        description="in-process ingestion and reindex: how long one bulk embed call that timed "
        "out, found its lane full or its worker unreachable is retried (with back-off) before "
        "the job fails; 0 = fail at once",
    )
    hang_timeout_s: float = Field(
        30.0, gt=0, description="an inference running longer than this flips readiness"
    )
    probe_interval_s: float = Field(
        5.0, gt=0, description="how often an unhealthy encoder re-tries a warm-up inference"
    )
    intra_op_threads: int = Field(0, ge=0, description="0 = ONNX Runtime's default")
    inter_op_threads: int = Field(0, ge=0)
    spin_wait: bool = Field(
        False,
        description="let ORT's worker threads spin between runs (lower per-op latency on a "
        "dedicated machine; off, they yield the cores to decoding and request hand-offs)",
    )
    engine_cache_dir: Path | None = None
    # TensorRT optimisation profile for the batch axis, MIN:OPT:MAX.
    trt_batch: str = Field("1:16:64", pattern=r"^\d+:\d+:\d+$")
    io_binding: bool = Field(True, description="bind outputs on the GPU with CUDA (io-binding)")

    _split = field_validator("endpoints", "extra_bundles", mode="before")(_split_csv)

    @field_validator("trt_batch")
    @classmethod
    def _profile(cls, value: str) -> str:
        lo, opt, hi = (int(v) for v in value.split(":"))
        if not 1 <= lo <= opt <= hi:
            raise ValueError(f"trt_batch {value!r} must satisfy 1 <= MIN <= OPT <= MAX")
        return value

    def lane(self, name: str) -> LaneSettings:
        return self.interactive if name == "interactive" else self.bulk


class WorkerSettings(BaseModel):
    """The encoder worker process (``clipsearch worker``)."""

    # Loopback unless told otherwise: workers serve gRPC without authentication. The images and
    # the chart bind 0.0.0.0, and the chart's NetworkPolicy admits only gateways and indexers.
    host: str = Field("127.0.0.1", description="bind address; 0.0.0.0 to serve other hosts")
    port: int = Field(50051, ge=0, le=65535)
    metrics_port: int = Field(9100, ge=0, le=65535, description="0 = no metrics server")
    max_message_mb: int = Field(64, ge=1, description="largest gRPC message accepted")


class QdrantSettings(BaseModel):
    url: str | None = None
    api_key: SecretStr | None = None
    timeout_s: float = 10.0


class BrokerSettings(BaseModel):
    """Redis: the Celery broker, the points stream from indexers to the writer, job progress."""

    url: str | None = None
    # A task held by a killed indexer goes back to the queue once it has been unacknowledged for
    # visibility_timeout_s, found by a sweep every restore_interval_s: at most ~30 s by default.
    # A task running longer than visibility_timeout_s is delivered twice: harmless (point ids
    # are deterministic, progress counts each item once), only wasted work.
    visibility_timeout_s: float = Field(25.0, gt=0, description="Celery redelivery delay")
    restore_interval_s: float = Field(5.0, gt=0, description="sweep for tasks to redeliver")
    # One entry per task (its batch of points): ~6 KB per 512-d image point, so 1,000 entries
    # of 32 items hold ~200 MB in Redis at worst.
    stream_max_len: int = Field(
        1_000, ge=1, description="points-stream entries awaiting the writer; more = tasks wait"
    )
    append_timeout_s: float = Field(
        10.0, gt=0, description="longest a task waits for room in the stream, then it retries"
    )
    task_max_retries: int = Field(
        360, ge=0, description="retries of a task that meets a full stream or a busy encoder"
    )
    claim_idle_ms: int = Field(
        60_000, ge=1, description="unacknowledged this long, a writer's entry goes to another"
    )
    writer_max_entries: int = Field(256, ge=1, description="stream entries read per batch")
    writer_max_points: int = Field(4_096, ge=1, description="points per store upsert")
    writer_block_ms: int = Field(1_000, ge=1, description="how long one stream read waits")
    max_errors_kept: int = Field(1_000, ge=0, description="failed items listed per job")
    plan_batch_size: int = Field(32, ge=1, le=1_000, description="entries per index_batch task")
    # Hand-over (indexer/distributed/writer.py): a writer whose writes keep failing stops
    # touching the stream, so its entries go idle and a healthy writer claims them.
    writer_name: str | None = Field(
        None, description="consumer name in the writers group; unset = the host name"
    )
    writer_max_failures: int = Field(
        5, ge=1, description="failed writes in a row before a writer stops claiming"
    )
    writer_max_deliveries: int = Field(
        20, ge=2, description="deliveries of a stream entry before it goes to the dead letters"
    )
    writer_forget_idle_ms: int = Field(
        600_000, ge=1, description="a writer idle this long, holding nothing, leaves the group"
    )
    dead_letter_max_len: int = Field(10_000, ge=1, description="dead letters kept per collection")
    # The HTTP probe of `clipsearch indexer` and `clipsearch writer` (/health/live,
    # /health/ready, /metrics); the gateway has its own on its port.
    probe_port: int = Field(0, ge=0, le=65535, description="0 = no probe server")
    probe_host: str = Field("127.0.0.1", description="probe bind address; 0.0.0.0 in a pod")

    @model_validator(mode="after")
    def _hand_over_before_giving_up(self) -> BrokerSettings:
        # A writer re-reads an entry once per failed write: with a bound this low, the writer
        # that cannot write would dead-letter its entries instead of handing them over.
        if self.writer_max_deliveries <= self.writer_max_failures:
            raise ValueError(
                f"broker.writer_max_deliveries ({self.writer_max_deliveries}) must exceed "
                f"broker.writer_max_failures ({self.writer_max_failures})"
            )
        return self

    @property
    def safe_url(self) -> str:
        """The URL without its password, for messages and logs."""
        return redact_url(self.url or "")


class StartupSettings(BaseModel):
    """How a gateway waits for what it needs (encoder workers, a Qdrant server) and keeps its
    probes: a dependency not there yet is tried again with doubling waits up to ``backoff_max_s``,
    for as long as it takes; readiness is re-checked in the background every
    ``health_interval_s``; ``/health/live`` fails once that check has not completed for
    ``stall_s`` (the process is wedged); ``gc_freeze``: see :mod:`service.core.collector`."""

    backoff_max_s: float = Field(
        5.0, gt=0, description="longest wait between two tries to reach a dependency"
    )
    health_interval_s: float = Field(
        1.0, gt=0, description="how often readiness is re-checked in the background"
    )
    stall_s: float = Field(
        60.0, gt=0, description="/health/live fails once no readiness check completed this long"
    )
    gc_freeze: bool = Field(
        True,
        description="once started, move the objects the process keeps for life out of Python's "
        "garbage-collector scans (gc.freeze): full collections of them held the GIL up to "
        "100-250 ms several times a minute under load (service/core/collector.py)",
    )


class RateLimit(BaseModel):
    """A token bucket per API key (per client address for anonymous callers): ``per_s`` calls a
    second on average, ``burst`` at once."""

    per_s: float = Field(0.0, ge=0, description="calls a second per key; 0 = no limit")
    burst: int = Field(0, ge=0, description="calls at once per key; 0 = one second's worth")

    @property
    def capacity(self) -> float:
        return float(self.burst or max(1.0, self.per_s))


class AuthSettings(BaseModel):
    """API keys (``key:scope[@collection]+...[:name]``, see :mod:`service.core.keys`) from the
    environment and/or a file; none = no auth. Only their SHA-256 is kept."""

    # Settings errors never quote the value: an API key entry with a typo is still a secret.
    model_config = ConfigDict(hide_input_in_errors=True)

    api_keys: Annotated[tuple[ApiKey, ...], NoDecode] = Field(
        default_factory=tuple,
        description="CLIPSEARCH_AUTH__API_KEYS: comma-separated key:scope1+scope2[:name] entries",
    )
    api_keys_file: Path | None = Field(
        None, description="a file of keys, one entry a line, # comments (a mounted Secret)"
    )
    search_rate: RateLimit = Field(default_factory=RateLimit)
    write_rate: RateLimit = Field(default_factory=RateLimit, description="ingest and admin calls")

    @field_validator("api_keys", mode="before")
    @classmethod
    def _parse(cls, value: object) -> object:
        if isinstance(value, str):
            return api_keys.parse_keys(value)
        if isinstance(value, dict):  # {key: scopes}, as code and tests build settings
            return [
                api_keys.parse_entry(f"{key}:{'+'.join(sorted(scopes))}", f"api key {n}")[1]
                for n, (key, scopes) in enumerate(value.items(), start=1)
            ]
        return value

    @model_validator(mode="after")
    def _merge_file(self) -> AuthSettings:
        loaded = [] if self.api_keys_file is None else api_keys.read_key_file(self.api_keys_file)
        merged = api_keys.merge(self.api_keys, loaded)
        if merged != self.api_keys:
            self.api_keys = merged
        return self

    def rate(self, scope: Scope) -> RateLimit:
        return self.search_rate if scope == "search" else self.write_rate


class SourcesSettings(BaseModel):
    # Local folders; object-store prefixes given here too (``s3://bucket/pre``) move to
    # ``allowed_prefixes`` (a Path would fold their ``//``).
    allowed_roots: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    allowed_prefixes: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="object-store prefixes (s3://bucket/pre) to read"
    )
    # URL fetching refuses loopback, private, link-local (cloud metadata) and other non-public
    # addresses; these CIDRs are let through anyway (tests, private deployments' own buckets).
    allowed_networks: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="CIDRs that URL sources may reach even if private"
    )
    fetch_timeout_s: float = Field(15.0, gt=0, description="total time for one URL fetch")
    max_redirects: int = Field(5, ge=0, le=20, description="redirects followed per URL")

    _split = field_validator(
        "allowed_roots", "allowed_prefixes", "allowed_networks", mode="before"
    )(_split_csv)

    @model_validator(mode="before")
    @classmethod
    def _object_prefixes(cls, data: object) -> object:
        """``s3://bucket/pre`` among the roots is an object-store prefix, kept as text."""
        if not isinstance(data, dict) or "allowed_roots" not in data:
            return data
        roots = _split_csv(data["allowed_roots"])
        if not isinstance(roots, list):
            return data
        remote = [str(r) for r in roots if isinstance(r, str) and "://" in r]
        prefixes = _split_csv(data.get("allowed_prefixes") or [])
        assert isinstance(prefixes, list)
        return {
            **data,
            "allowed_roots": [r for r in roots if not (isinstance(r, str) and "://" in r)],
            "allowed_prefixes": list(dict.fromkeys([*prefixes, *remote])),
        }

    @field_validator("allowed_prefixes")
    @classmethod
    def _prefixes(cls, value: list[str]) -> list[str]:
        for prefix in value:
            scheme, _, rest = prefix.partition("://")
            if scheme != "s3" or not rest.strip("/"):
                raise ValueError(
                    f"allowed object-store prefix {prefix!r} must be s3://BUCKET[/PREFIX]"
                )
        return [p.rstrip("/") for p in value]

    @field_validator("allowed_networks")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError as exc:
                raise ValueError(f"allowed_networks entry {cidr!r} is not a CIDR: {exc}") from exc
        return value


class LimitsSettings(BaseModel):
    max_upload_bytes: int = Field(20 * 1024 * 1024, ge=1)
    # Pillow's own bomb guard warns at ~89 MP; refusing earlier keeps decode memory bounded.
    max_image_pixels: int = Field(40_000_000, ge=1)
    max_text_chars: int = Field(2_000, ge=1)
    max_caption_chars: int = Field(10_000, ge=1)
    max_limit: int = Field(100, ge=1)


class AdminSettings(BaseModel):
    """Model rollouts (``/v1/admin``): the query log their comparison replays, and how many
    replaced versions are kept for rollback."""

    query_log: bool = Field(
        True,
        description="CLIPSEARCH_ADMIN__QUERY_LOG=0 turns it off: keep the last text queries "
        "(and only the sha256 of image queries) in memory, for a rollout's comparison",
    )
    query_log_size: int = Field(1_000, ge=1, le=100_000, description="queries kept per process")
    compare_queries: int = Field(
        50, ge=0, le=1_000, description="recent distinct text queries a rollout's report replays"
    )
    retention: int = Field(
        1, ge=1, le=20, description="versions kept after a promote besides the current one"
    )
    # With a broker, rollout records live in Redis and a replica runs a rollout while it holds
    # its lease (``indexer.jobs.rollout_records``): a dead holder's rollout moves within about this.
    rollout_lease_s: float = Field(
        15.0, ge=1.0, le=600.0, description="lease of the gateway that runs a rollout"
    )


class VideoSettings(BaseModel):
    """How the indexer cuts videos into searchable segments."""

    segmenting: Literal["fixed", "shots"] = "fixed"
    segment_s: float = Field(5.0, gt=0, le=3600, description="segment length (fixed mode)")
    sample_fps: float = Field(1.0, gt=0, le=60, description="frames embedded per second")
    max_duration_s: float = Field(4 * 3600, gt=0, description="longer videos are refused")
    max_bytes: int = Field(256 * 1024 * 1024, ge=1, description="largest video fetched by URL")


class Settings(BaseSettings):
    # hide_input_in_errors: a settings error never quotes the value (API keys, passwords in URLs).
    model_config = SettingsConfigDict(
        env_prefix="CLIPSEARCH_",
        env_nested_delimiter="__",
        extra="ignore",
        hide_input_in_errors=True,
    )

    data_dir: Path = Path(".clipsearch")
    bundle: str | None = Field(None, description="bundle folder or zoo name; unset = default")
    collection: str = Field("media", pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    host: str = "127.0.0.1"
    port: int = 8000
    grpc_port: int = 50052
    log_level: str = "INFO"

    encoder: EncoderSettings = Field(default_factory=EncoderSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    qdrant: QdrantSettings = Field(default_factory=QdrantSettings)
    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    startup: StartupSettings = Field(default_factory=StartupSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    sources: SourcesSettings = Field(default_factory=SourcesSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    video: VideoSettings = Field(default_factory=VideoSettings)
    admin: AdminSettings = Field(default_factory=AdminSettings)

    @property
    def embedded_store(self) -> bool:
        return self.qdrant.url is None

    @property
    def in_process_encoder(self) -> bool:
        return not self.encoder.endpoints

    @property
    def in_process_jobs(self) -> bool:
        return self.broker.url is None
