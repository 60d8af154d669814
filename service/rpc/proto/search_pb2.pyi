# search_pb2.pyi: generated from service/rpc/search.proto by scripts/gen_protos.py
# (grpcio-tools 1.85.1). DO NOT EDIT: change the proto and run
# `make protos`; `make protos-check` fails when this file is stale.
from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Strings(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, values: _Optional[_Iterable[str]] = ...) -> None: ...

class Integers(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, values: _Optional[_Iterable[int]] = ...) -> None: ...

class FilterValue(_message.Message):
    __slots__ = ("text", "integer", "flag", "texts", "integers")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    INTEGER_FIELD_NUMBER: _ClassVar[int]
    FLAG_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    INTEGERS_FIELD_NUMBER: _ClassVar[int]
    text: str
    integer: int
    flag: bool
    texts: Strings
    integers: Integers
    def __init__(self, text: _Optional[str] = ..., integer: _Optional[int] = ..., flag: _Optional[bool] = ..., texts: _Optional[_Union[Strings, _Mapping]] = ..., integers: _Optional[_Union[Integers, _Mapping]] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("text", "image", "item_id", "image_url", "mode", "limit", "offset", "filter", "score_threshold", "group_by", "explain", "collection")
    class FilterEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: FilterValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[FilterValue, _Mapping]] = ...) -> None: ...
    TEXT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_URL_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    SCORE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    text: str
    image: bytes
    item_id: str
    image_url: str
    mode: str
    limit: int
    offset: int
    filter: _containers.MessageMap[str, FilterValue]
    score_threshold: float
    group_by: str
    explain: bool
    collection: str
    def __init__(self, text: _Optional[str] = ..., image: _Optional[bytes] = ..., item_id: _Optional[str] = ..., image_url: _Optional[str] = ..., mode: _Optional[str] = ..., limit: _Optional[int] = ..., offset: _Optional[int] = ..., filter: _Optional[_Mapping[str, FilterValue]] = ..., score_threshold: _Optional[float] = ..., group_by: _Optional[str] = ..., explain: _Optional[bool] = ..., collection: _Optional[str] = ...) -> None: ...

class HitLabel(_message.Message):
    __slots__ = ("name", "score")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    name: str
    score: float
    def __init__(self, name: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class ChannelExplain(_message.Message):
    __slots__ = ("channel", "similarity", "standardised", "rank", "weight", "relevance")
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    STANDARDISED_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    RELEVANCE_FIELD_NUMBER: _ClassVar[int]
    channel: str
    similarity: float
    standardised: float
    rank: int
    weight: float
    relevance: float
    def __init__(self, channel: _Optional[str] = ..., similarity: _Optional[float] = ..., standardised: _Optional[float] = ..., rank: _Optional[int] = ..., weight: _Optional[float] = ..., relevance: _Optional[float] = ...) -> None: ...

class Hit(_message.Message):
    __slots__ = ("id", "score", "kind", "uri", "caption", "description", "description_generated", "labels", "tags", "metadata_json", "video_id", "t_start", "t_end", "thumbnail", "explain", "media_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    CAPTION_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_GENERATED_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    VIDEO_ID_FIELD_NUMBER: _ClassVar[int]
    T_START_FIELD_NUMBER: _ClassVar[int]
    T_END_FIELD_NUMBER: _ClassVar[int]
    THUMBNAIL_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    MEDIA_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    score: float
    kind: str
    uri: str
    caption: str
    description: str
    description_generated: bool
    labels: _containers.RepeatedCompositeFieldContainer[HitLabel]
    tags: _containers.RepeatedScalarFieldContainer[str]
    metadata_json: str
    video_id: str
    t_start: float
    t_end: float
    thumbnail: str
    explain: _containers.RepeatedCompositeFieldContainer[ChannelExplain]
    media_id: str
    def __init__(self, id: _Optional[str] = ..., score: _Optional[float] = ..., kind: _Optional[str] = ..., uri: _Optional[str] = ..., caption: _Optional[str] = ..., description: _Optional[str] = ..., description_generated: _Optional[bool] = ..., labels: _Optional[_Iterable[_Union[HitLabel, _Mapping]]] = ..., tags: _Optional[_Iterable[str]] = ..., metadata_json: _Optional[str] = ..., video_id: _Optional[str] = ..., t_start: _Optional[float] = ..., t_end: _Optional[float] = ..., thumbnail: _Optional[str] = ..., explain: _Optional[_Iterable[_Union[ChannelExplain, _Mapping]]] = ..., media_id: _Optional[str] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("hits", "took_ms", "model", "mode", "channels", "score_kind")
    HITS_FIELD_NUMBER: _ClassVar[int]
    TOOK_MS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    SCORE_KIND_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[Hit]
    took_ms: float
    model: str
    mode: str
    channels: _containers.RepeatedScalarFieldContainer[str]
    score_kind: str
    def __init__(self, hits: _Optional[_Iterable[_Union[Hit, _Mapping]]] = ..., took_ms: _Optional[float] = ..., model: _Optional[str] = ..., mode: _Optional[str] = ..., channels: _Optional[_Iterable[str]] = ..., score_kind: _Optional[str] = ...) -> None: ...

class GetItemRequest(_message.Message):
    __slots__ = ("id", "collection")
    ID_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    id: str
    collection: str
    def __init__(self, id: _Optional[str] = ..., collection: _Optional[str] = ...) -> None: ...

class DeleteItemRequest(_message.Message):
    __slots__ = ("id", "collection")
    ID_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    id: str
    collection: str
    def __init__(self, id: _Optional[str] = ..., collection: _Optional[str] = ...) -> None: ...

class EmbedRequest(_message.Message):
    __slots__ = ("texts", "images", "collection")
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    images: _containers.RepeatedScalarFieldContainer[bytes]
    collection: str
    def __init__(self, texts: _Optional[_Iterable[str]] = ..., images: _Optional[_Iterable[bytes]] = ..., collection: _Optional[str] = ...) -> None: ...

class Vector(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class TextVectors(_message.Message):
    __slots__ = ("joint", "description")
    JOINT_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    joint: Vector
    description: Vector
    def __init__(self, joint: _Optional[_Union[Vector, _Mapping]] = ..., description: _Optional[_Union[Vector, _Mapping]] = ...) -> None: ...

class EmbedResponse(_message.Message):
    __slots__ = ("model", "texts", "images")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    model: str
    texts: _containers.RepeatedCompositeFieldContainer[TextVectors]
    images: _containers.RepeatedCompositeFieldContainer[Vector]
    def __init__(self, model: _Optional[str] = ..., texts: _Optional[_Iterable[_Union[TextVectors, _Mapping]]] = ..., images: _Optional[_Iterable[_Union[Vector, _Mapping]]] = ...) -> None: ...

class ManifestLines(_message.Message):
    __slots__ = ("lines",)
    LINES_FIELD_NUMBER: _ClassVar[int]
    lines: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, lines: _Optional[_Iterable[str]] = ...) -> None: ...

class Urls(_message.Message):
    __slots__ = ("urls",)
    URLS_FIELD_NUMBER: _ClassVar[int]
    urls: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, urls: _Optional[_Iterable[str]] = ...) -> None: ...

class Shards(_message.Message):
    __slots__ = ("patterns",)
    PATTERNS_FIELD_NUMBER: _ClassVar[int]
    patterns: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, patterns: _Optional[_Iterable[str]] = ...) -> None: ...

class Table(_message.Message):
    __slots__ = ("uri", "columns")
    class ColumnsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    URI_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    uri: str
    columns: _containers.ScalarMap[str, str]
    def __init__(self, uri: _Optional[str] = ..., columns: _Optional[_Mapping[str, str]] = ...) -> None: ...

class IngestRequest(_message.Message):
    __slots__ = ("directory", "manifest", "manifest_lines", "urls", "webdataset", "table", "collection")
    DIRECTORY_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_LINES_FIELD_NUMBER: _ClassVar[int]
    URLS_FIELD_NUMBER: _ClassVar[int]
    WEBDATASET_FIELD_NUMBER: _ClassVar[int]
    TABLE_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    directory: str
    manifest: str
    manifest_lines: ManifestLines
    urls: Urls
    webdataset: Shards
    table: Table
    collection: str
    def __init__(self, directory: _Optional[str] = ..., manifest: _Optional[str] = ..., manifest_lines: _Optional[_Union[ManifestLines, _Mapping]] = ..., urls: _Optional[_Union[Urls, _Mapping]] = ..., webdataset: _Optional[_Union[Shards, _Mapping]] = ..., table: _Optional[_Union[Table, _Mapping]] = ..., collection: _Optional[str] = ...) -> None: ...

class IngestResponse(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "collection")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    collection: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., collection: _Optional[str] = ...) -> None: ...

class JobError(_message.Message):
    __slots__ = ("item", "reason")
    ITEM_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    item: str
    reason: str
    def __init__(self, item: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "kind", "state", "total", "done", "failed", "skipped", "attempt", "rate_per_s", "eta_s", "waiting_for_writer", "errors", "error", "created_at", "updated_at", "shards_total", "shards_done", "total_known", "shards_read", "collection", "redelivered")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    RATE_PER_S_FIELD_NUMBER: _ClassVar[int]
    ETA_S_FIELD_NUMBER: _ClassVar[int]
    WAITING_FOR_WRITER_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    SHARDS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    SHARDS_DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_KNOWN_FIELD_NUMBER: _ClassVar[int]
    SHARDS_READ_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    REDELIVERED_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: str
    state: str
    total: int
    done: int
    failed: int
    skipped: int
    attempt: int
    rate_per_s: float
    eta_s: float
    waiting_for_writer: bool
    errors: _containers.RepeatedCompositeFieldContainer[JobError]
    error: str
    created_at: str
    updated_at: str
    shards_total: int
    shards_done: int
    total_known: bool
    shards_read: int
    collection: str
    redelivered: int
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[str] = ..., state: _Optional[str] = ..., total: _Optional[int] = ..., done: _Optional[int] = ..., failed: _Optional[int] = ..., skipped: _Optional[int] = ..., attempt: _Optional[int] = ..., rate_per_s: _Optional[float] = ..., eta_s: _Optional[float] = ..., waiting_for_writer: _Optional[bool] = ..., errors: _Optional[_Iterable[_Union[JobError, _Mapping]]] = ..., error: _Optional[str] = ..., created_at: _Optional[str] = ..., updated_at: _Optional[str] = ..., shards_total: _Optional[int] = ..., shards_done: _Optional[int] = ..., total_known: _Optional[bool] = ..., shards_read: _Optional[int] = ..., collection: _Optional[str] = ..., redelivered: _Optional[int] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token", "total_size")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    next_page_token: str
    total_size: int
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_size: _Optional[int] = ...) -> None: ...

class CollectionVersion(_message.Message):
    __slots__ = ("name", "number", "bundle", "role", "points", "vectors", "settings_json", "index")
    class VectorsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_JSON_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    name: str
    number: int
    bundle: str
    role: str
    points: int
    vectors: _containers.ScalarMap[str, int]
    settings_json: str
    index: VersionIndex
    def __init__(self, name: _Optional[str] = ..., number: _Optional[int] = ..., bundle: _Optional[str] = ..., role: _Optional[str] = ..., points: _Optional[int] = ..., vectors: _Optional[_Mapping[str, int]] = ..., settings_json: _Optional[str] = ..., index: _Optional[_Union[VersionIndex, _Mapping]] = ...) -> None: ...

class VersionIndex(_message.Message):
    __slots__ = ("indexed_points", "building", "segments")
    INDEXED_POINTS_FIELD_NUMBER: _ClassVar[int]
    BUILDING_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    indexed_points: int
    building: bool
    segments: int
    def __init__(self, indexed_points: _Optional[int] = ..., building: _Optional[bool] = ..., segments: _Optional[int] = ...) -> None: ...

class Collection(_message.Message):
    __slots__ = ("name", "current", "building", "previous", "points", "vectors", "bundle", "served", "versions", "default", "domain", "intended_use")
    class VectorsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    BUILDING_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    SERVED_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    INTENDED_USE_FIELD_NUMBER: _ClassVar[int]
    name: str
    current: str
    building: str
    previous: str
    points: int
    vectors: _containers.ScalarMap[str, int]
    bundle: str
    served: bool
    versions: _containers.RepeatedCompositeFieldContainer[CollectionVersion]
    default: bool
    domain: str
    intended_use: str
    def __init__(self, name: _Optional[str] = ..., current: _Optional[str] = ..., building: _Optional[str] = ..., previous: _Optional[str] = ..., points: _Optional[int] = ..., vectors: _Optional[_Mapping[str, int]] = ..., bundle: _Optional[str] = ..., served: _Optional[bool] = ..., versions: _Optional[_Iterable[_Union[CollectionVersion, _Mapping]]] = ..., default: _Optional[bool] = ..., domain: _Optional[str] = ..., intended_use: _Optional[str] = ...) -> None: ...

class CreateCollectionRequest(_message.Message):
    __slots__ = ("name", "bundle")
    NAME_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    name: str
    bundle: str
    def __init__(self, name: _Optional[str] = ..., bundle: _Optional[str] = ...) -> None: ...

class ListCollectionsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListCollectionsResponse(_message.Message):
    __slots__ = ("collections", "next_page_token", "total_size")
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    collections: _containers.RepeatedCompositeFieldContainer[Collection]
    next_page_token: str
    total_size: int
    def __init__(self, collections: _Optional[_Iterable[_Union[Collection, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_size: _Optional[int] = ...) -> None: ...

class GetCollectionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteCollectionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteCollectionResponse(_message.Message):
    __slots__ = ("collection", "deleted_versions")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    DELETED_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    deleted_versions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, collection: _Optional[str] = ..., deleted_versions: _Optional[_Iterable[str]] = ...) -> None: ...
