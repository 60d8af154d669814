"""Settings: one object per process, built once at start-up and passed in.

Environment variables use the prefix ``CLIPSEARCH_`` and ``__`` for nesting
(``CLIPSEARCH_ENCODER__MAX_BATCH_SIZE``). Everything unset means the embedded default: the
encoder in-process, the store embedded under ``data_dir``, jobs on the in-process runner.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Provider = Literal["auto", "tensorrt", "cuda", "cpu"]
Scope = Literal["search", "ingest", "admin"]
SCOPES: tuple[Scope, ...] = ("search", "ingest", "admin")


def _csv(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _split_csv(value: object) -> object:
    return _csv(value) if isinstance(value, str) else value


class EncoderSettings(BaseModel):
    endpoints: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="host:port of encoder workers; empty = in-process"
    )
    provider: Provider = "auto"
    require_gpu: bool = False
    max_batch_size: int = Field(32, ge=1, le=4096)
    max_wait_ms: float = Field(5.0, ge=0, le=10_000)
    max_queue: int = Field(1024, ge=1)
    intra_op_threads: int = Field(0, ge=0, description="0 = ONNX Runtime's default")
    inter_op_threads: int = Field(0, ge=0)
    engine_cache_dir: Path | None = None

    _split = field_validator("endpoints", mode="before")(_split_csv)


class QdrantSettings(BaseModel):
    url: str | None = None
    api_key: SecretStr | None = None
    timeout_s: float = 10.0


class BrokerSettings(BaseModel):
    url: str | None = None


class AuthSettings(BaseModel):
    """``api_keys`` is ``key:scope1+scope2,...``; empty means no auth."""

    api_keys: Annotated[dict[str, frozenset[Scope]], NoDecode] = Field(default_factory=dict)

    @field_validator("api_keys", mode="before")
    @classmethod
    def _parse(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        keys: dict[str, frozenset[str]] = {}
        for entry in _csv(value):
            key, sep, scopes = entry.partition(":")
            if not sep or not key:
                raise ValueError(f"api key entry {entry!r} must look like key:scope1+scope2")
            parsed = frozenset(s.strip() for s in scopes.split("+") if s.strip())
            unknown = parsed - set(SCOPES)
            if unknown or not parsed:
                raise ValueError(f"api key scopes must be among {SCOPES}, got {sorted(parsed)}")
            keys[key] = parsed
        return keys


class SourcesSettings(BaseModel):
    allowed_roots: Annotated[list[Path], NoDecode] = Field(default_factory=list)

    _split = field_validator("allowed_roots", mode="before")(_split_csv)


class LimitsSettings(BaseModel):
    max_upload_bytes: int = Field(20 * 1024 * 1024, ge=1)
    # Pillow's own bomb guard warns at ~89 MP; refusing earlier keeps decode memory bounded.
    max_image_pixels: int = Field(40_000_000, ge=1)
    max_text_chars: int = Field(2_000, ge=1)
    max_caption_chars: int = Field(10_000, ge=1)
    max_limit: int = Field(100, ge=1)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CLIPSEARCH_", env_nested_delimiter="__", extra="ignore"
    )

    data_dir: Path = Path(".clipsearch")
    bundle: str | None = Field(None, description="bundle folder or zoo name; unset = default")
    collection: str = Field("media", pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    host: str = "127.0.0.1"
    port: int = 8000
    grpc_port: int = 50052
    log_level: str = "INFO"

    encoder: EncoderSettings = Field(default_factory=EncoderSettings)
    qdrant: QdrantSettings = Field(default_factory=QdrantSettings)
    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    sources: SourcesSettings = Field(default_factory=SourcesSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)

    @property
    def embedded_store(self) -> bool:
        return self.qdrant.url is None

    @property
    def in_process_encoder(self) -> bool:
        return not self.encoder.endpoints

    @property
    def in_process_jobs(self) -> bool:
        return self.broker.url is None
